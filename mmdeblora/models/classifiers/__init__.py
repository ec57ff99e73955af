from .deblora_image_classifier import DebLoRAImageClassifier

__all__ = ['DebLoRAImageClassifier']
