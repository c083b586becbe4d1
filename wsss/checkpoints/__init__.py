"""Importers for pre-trained weights: ImageNet backbone files (:mod:`.imagenet`, :mod:`.mxnet`) and the
seed methods' released checkpoints (one module per method). Nothing here downloads anything."""
