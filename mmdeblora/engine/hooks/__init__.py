from .atomic_checkpoint_hook import AtomicCheckpointHook
from .class_stats_hook import ClassStatsHook
from .deblora_hook import DebLoRAHook
from .divergence_hook import DivergenceError, DivergenceHook
from .lora_checkpoint_hook import LoRACheckpointHook
from .random_state_hook import RandomStateHook, add_exact_resume_hooks
from .trainable_params_hook import TrainableParamsHook, trainable_params
from .training_phases_hook import TrainingPhasesHook

__all__ = ['ClassStatsHook', 'DebLoRAHook', 'TrainableParamsHook', 'trainable_params',
           'DivergenceError', 'DivergenceHook', 'LoRACheckpointHook', 'RandomStateHook',
           'add_exact_resume_hooks', 'AtomicCheckpointHook', 'TrainingPhasesHook']
