"""The archive the PASCAL VOC evaluation server takes for the 2012 segmentation test set.

The server wants ``results/VOC2012/Segmentation/comp<N>_test_cls/<id>.png``: one indexed PNG per id of the
1,456-image test list, in the VOC colour map, at the image's own size. ``comp5`` is for methods trained on VOC
data only, ``comp6`` for those that used outside data (ImageNet weights count). Submissions rejected by the
server cost a day; every check runs here first, on every file, and names what is wrong.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image

from wsss.data.formats import DataFormatError, atomic_write_bytes, read_split_list, voc_palette

NUM_CLASSES = 21
COMPETITIONS = (5, 6)


class ExportError(ValueError):
    """The prediction folder cannot become a valid submission; the message lists every problem found."""


def archive_member(comp: int, image_id: str) -> str:
    return f"results/VOC2012/Segmentation/comp{comp}_test_cls/{image_id}.png"


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def match_ids(pred_dir: Path, ids: Sequence[str]) -> Dict[str, Path]:
    """``{id: pred_dir/id.png}`` when the folder holds exactly the listed ids, else an error naming the
    missing and the extra ones."""
    found = {p.stem: p for p in pred_dir.glob("*.png")}
    missing = sorted(set(ids) - set(found))
    extra = sorted(set(found) - set(ids))
    problems = []
    if missing:
        problems.append(f"{len(missing)} ids of the test list have no prediction: {_listing(missing)}")
    if extra:
        problems.append(f"{len(extra)} predictions are not in the test list (remove them, or pass list= for "
                        f"another list): {_listing(extra)}")
    if problems:
        raise ExportError(f"{pred_dir}: " + "; ".join(problems))
    return {i: found[i] for i in ids}


def check_prediction(path: Path, image_size: Optional[tuple] = None) -> Optional[str]:
    """Why ``path`` is not a server-ready prediction (None when it is): a PNG in mode ``P`` with the VOC colour
    map, values 0..20 (255, the VOC boundary colour, is refused too: the server scores it as a wrong label), and,
    when known, the size of its image (W, H)."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                return f"a {img.format} file, not a PNG"
            if img.mode != "P":
                return (f"mode {img.mode}, not an indexed (P) PNG with the VOC colour map; write it with "
                        "wsss.data.formats.write_label_png")
            palette = img.getpalette() or []
            if palette[: 3 * NUM_CLASSES] != voc_palette()[: 3 * NUM_CLASSES]:
                return "its colour map is not the VOC one (the server reads colours, not indices)"
            if image_size is not None and img.size != tuple(image_size):
                return f"size {img.size[0]}x{img.size[1]}, but its image is {image_size[0]}x{image_size[1]}"
            values = np.unique(np.asarray(img))
    except (OSError, SyntaxError) as exc:
        return f"not a readable PNG ({exc})"
    bad = [int(v) for v in values if v >= NUM_CLASSES]
    if bad:
        return f"holds values {bad[:5]} outside the 21 VOC classes 0..20"
    return None


def image_sizes(image_dir: Path, ids: Iterable[str]) -> Dict[str, tuple]:
    """``{id: (W, H)}`` of ``image_dir/id.jpg``; a missing image is an error naming it."""
    sizes = {}
    for image_id in ids:
        path = image_dir / f"{image_id}.jpg"
        if not path.is_file():
            raise ExportError(f"{path}: missing; image_dir= must hold the test images (VOC2012/JPEGImages of the "
                              "test set) or be left out")
        with Image.open(path) as img:
            sizes[image_id] = img.size
    return sizes


def check_predictions(files: Dict[str, Path], sizes: Optional[Dict[str, tuple]] = None,
                      progress: bool = False) -> None:
    """Every file through :func:`check_prediction`; all problems in one error."""
    from tqdm import tqdm

    problems = []
    for image_id, path in tqdm(files.items(), desc="check", unit="img", disable=not progress):
        why = check_prediction(path, sizes.get(image_id) if sizes else None)
        if why:
            problems.append(f"{path.name}: {why}")
    if problems:
        raise ExportError(f"{len(problems)} of {len(files)} predictions would be rejected:\n  "
                          + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))


def write_archive(out: Path, files: Dict[str, Path], comp: int) -> Path:
    """``out`` (.tar.gz or .tgz) with the server's layout, written atomically; members sorted, times zeroed,
    so the same predictions give the same bytes."""
    if comp not in COMPETITIONS:
        raise ExportError(f"comp={comp}: the VOC segmentation competitions are comp5 (VOC data only) and comp6 "
                          "(outside data, e.g. ImageNet weights)")
    if not str(out).endswith((".tar.gz", ".tgz")):
        raise ExportError(f"out={out}: the server takes a .tar.gz (or .tgz) archive")
    buffer = io.BytesIO()  # a few MB for 1,456 label PNGs
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for image_id in sorted(files):
            data = files[image_id].read_bytes()
            info = tarfile.TarInfo(archive_member(comp, image_id))
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buffer.getvalue())
    return out


def export(pred_dir: Path, out: Path, ids: List[str], comp: int = 6, image_dir: Optional[Path] = None,
           progress: bool = False) -> Path:
    """Check ``pred_dir`` against ``ids`` (and the images' sizes) and write the archive."""
    if not pred_dir.is_dir():
        raise ExportError(f"pred_dir={pred_dir}: not a folder; pass the pred/ folder of wsss.infer split=test "
                          "or of wsss.predict")
    if comp not in COMPETITIONS:
        raise ExportError(f"comp={comp}: use comp=5 (VOC data only) or comp=6 (outside data, e.g. ImageNet weights)")
    files = match_ids(pred_dir, ids)
    sizes = image_sizes(image_dir, ids) if image_dir is not None else None
    check_predictions(files, sizes, progress)
    return write_archive(out, files, comp)


def read_ids(list_file: Optional[str]) -> List[str]:
    """The ids of ``list_file``, or of the VOC 2012 test list packaged with wsss (1,456 ids)."""
    from wsss.data.voc import packaged_voc12_file

    path = Path(list_file).expanduser() if list_file else packaged_voc12_file("test.txt")
    try:
        return read_split_list(path)
    except (OSError, DataFormatError) as exc:
        raise ExportError(f"list={path}: {exc}") from exc
