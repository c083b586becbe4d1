"""Data preparation from the official archives (``scripts/prepare_coco.py``, ``scripts/prepare_voc.py``)."""
