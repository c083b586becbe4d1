from .confusion import confusion_matrix, confusion_matrix_np, scores_from_confusion
from .miou import SegmentationIoU

__all__ = ["confusion_matrix", "confusion_matrix_np", "scores_from_confusion", "SegmentationIoU"]
