"""Train/val loaders over any :class:`~wsss.data.layout.Layout`: the one LightningDataModule.

Why one: a per-data-set copy drifts (DensePose's copy lost the exact DDP evaluation sampler). A data set's
module only says how to build its layout (:meth:`SegmentationDataModule.build_layout`) and, for a generated
set, how to write it (:meth:`~SegmentationDataModule.prepare_data`).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .layout import Layout
from .samplers import UnpaddedDistributedSampler
from .segmentation import SegmentationDataset, pad_collate
from .transforms import IMAGENET_MEAN, IMAGENET_STD


class SegmentationDataModule(pl.LightningDataModule):
    """Weakly supervised training on ``train_split`` (image labels + the supervision loader's targets; GT
    masks only with ``train_masks`` or ``pseudo_label_dir``), validation on the GT of ``val_split``.

    Under DDP the validation loader gives each rank a disjoint share of the images
    (:class:`~wsss.data.samplers.UnpaddedDistributedSampler`), so the summed confusion matrix is exact.
    """

    def __init__(self, root: str, num_classes: int, class_names: Sequence[str], train_split: str, val_split: str,
                 batch_size: int = 8, val_batch_size: int = 1, num_workers: int = 2,
                 train_transforms: Sequence[Mapping] | None = None, val_transforms: Sequence[Mapping] | None = None,
                 train_masks: bool = False, pseudo_label_dir: str | None = None,
                 supervision: Optional[Callable] = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, limit_val_samples: int | None = None,
                 valid_mask: bool = False, crop_size: int | None = None, flip_prob: float = 0.0,
                 train_seed_samples: int = 0, train_seed_split: str | None = None):
        super().__init__()
        self.crop_size = crop_size  # the training crop; conf/dataset/*.yaml's transform lists interpolate it
        self.root = root
        self.num_classes = num_classes
        self.class_names = list(class_names)
        if len(self.class_names) != num_classes:
            raise ValueError(f"dataset.class_names has {len(self.class_names)} names but num_classes={num_classes}")
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = num_workers
        self.train_transforms, self.val_transforms = train_transforms, val_transforms
        self.train_masks = train_masks or pseudo_label_dir is not None
        self.pseudo_label_dir = pseudo_label_dir
        self.supervision = supervision
        self.mean, self.std = mean, std
        self.limit_val_samples = limit_val_samples
        self.valid_mask = valid_mask
        self.flip_prob = flip_prob
        self.train_set: Optional[SegmentationDataset] = None
        self.val_set: Optional[SegmentationDataset] = None
        #: method.track_train_seeds: the first N images of train_seed_split (default: train_split) with their GT,
        #: scored like validation (a second validation loader)
        self.train_seed_samples, self.train_seed_split = int(train_seed_samples), train_seed_split or train_split
        self.train_seed_set: Optional[SegmentationDataset] = None

    def build_layout(self) -> Layout:
        """The data set's layout at ``root`` (after :meth:`prepare_data`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_layout()")

    def train_supervision(self) -> Optional[Callable]:
        """The loader of the training targets beyond the GT (default: ``supervision`` from conf/supervision)."""
        return self.supervision

    def _dataset(self, layout: Layout, split: str, train: bool) -> SegmentationDataset:
        return SegmentationDataset(
            layout, split, self.num_classes, load_mask=(self.train_masks if train else True),
            mask_dir=self.pseudo_label_dir if train else None,
            transforms=self.train_transforms if train else self.val_transforms,
            supervision=self.train_supervision() if train else None, mean=self.mean, std=self.std,
            valid_mask=self.valid_mask and train, flip_prob=self.flip_prob if train else 0.0)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers ranks that skipped prepare_data
        layout = self.build_layout()
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(layout, self.train_split, train=True)
            if len(self.train_set) < self.batch_size:  # drop_last would leave no batch: an untrained "result"
                raise ValueError(f"split '{self.train_split}' of {self.root} has {len(self.train_set)} images, fewer "
                                 f"than dataset.batch_size={self.batch_size}: no full training batch; lower "
                                 "dataset.batch_size")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._dataset(layout, self.val_split, train=False)
            if self.limit_val_samples:
                self.val_set.ids = self.val_set.ids[: self.limit_val_samples]
        if stage in (None, "fit", "validate") and self.train_seed_samples and self.train_seed_set is None:
            self.train_seed_set = self._dataset(layout, self.train_seed_split, train=False)
            self.train_seed_set.ids = self.train_seed_set.ids[: self.train_seed_samples]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, collate_fn=partial(pad_collate,
                                                                           pad_values=self.train_set.pad_values()),
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def _eval_loader(self, dataset: SegmentationDataset) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnpaddedDistributedSampler(dataset)
        return DataLoader(dataset, batch_size=self.val_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=partial(pad_collate,
                                                                           pad_values=dataset.pad_values()),
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        """The validation split; with ``train_seed_samples``, also the fixed training subset (loader 1)."""
        if self.train_seed_set is not None:
            return [self._eval_loader(self.val_set), self._eval_loader(self.train_seed_set)]
        return self._eval_loader(self.val_set)
