"""PASCAL VOC 2012 + SBD (official archives) -> SegmentationClassAug, train_aug.txt, cls_labels.npy for ``dataset=voc``.

    python scripts/prepare_voc.py --voc /path/VOCdevkit/VOC2012 --sbd /path/benchmark_RELEASE [--workers N] [--strict]

The rules (which mask wins, which ids make train_aug, where the image labels come from) are in the docstring of
:mod:`wsss.prepare.voc` and in the README section "COCO and VOC from the official archives".
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.prepare.voc import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
