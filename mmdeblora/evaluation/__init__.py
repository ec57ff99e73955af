from .group_dota_metric import GroupDOTAMetric
from .group_f1_metric import GroupF1Metric

__all__ = ['GroupDOTAMetric', 'GroupF1Metric']
