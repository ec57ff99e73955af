from .class_stats_hook import ClassStatsHook
from .deblora_hook import DebLoRAHook, extraction_pipeline, rebuild_param_groups

__all__ = ['ClassStatsHook', 'DebLoRAHook', 'extraction_pipeline', 'rebuild_param_groups']
