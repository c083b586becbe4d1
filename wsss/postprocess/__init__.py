"""Post-processing shared by every method: background rule and dense-CRF presets."""
from .background import add_background
from .crf import Background, CRFPreset, dense_crf, load_preset, refine, refine_many, stack_scores

__all__ = ["add_background", "Background", "CRFPreset", "dense_crf", "load_preset", "refine", "refine_many",
           "stack_scores"]
