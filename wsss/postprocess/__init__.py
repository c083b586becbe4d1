"""Post-processing shared by every method: background rule and dense-CRF presets."""
from .background import Background, LearnedBackground, background_rule
from .crf import CRFPreset, dense_crf, load_preset, refine, refine_many, stack_scores

__all__ = ["Background", "LearnedBackground", "background_rule", "CRFPreset", "dense_crf", "load_preset", "refine",
           "refine_many", "stack_scores"]
