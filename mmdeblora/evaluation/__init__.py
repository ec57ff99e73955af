from .group_dota_metric import GroupDOTAMetric

__all__ = ['GroupDOTAMetric']
