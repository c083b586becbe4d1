"""Multi-scale + flip dense inference shared by every method (``python -m wsss.infer``)."""
