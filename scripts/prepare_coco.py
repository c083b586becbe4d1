"""MS COCO 2014 (official archives) -> label PNGs, split lists, cls_labels.npy for ``dataset=coco``.

    python scripts/prepare_coco.py --coco /path/COCO2014 --out /path/coco_wsss [--workers N]

The rules (class order, crowd = 255, painting order, which lists hold which images) are in the docstring of
:mod:`wsss.prepare.coco` and in the README section "COCO and VOC from the official archives".
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.prepare.coco import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
