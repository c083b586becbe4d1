"""The classes a post-training tool uses, and cheap checks that catch the config of another data set.

Why: ``wsss.pseudo_label ... dataset=voc`` on the 6-class synthetic scores ran with 21 classes without a
word (every 6-class file is also a valid 21-class file). What a data root says about itself is checked
instead: its ``class_names.txt`` (the synthetic set writes one) and the width of its ``cls_labels`` file.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from wsss.data.formats import VOC_CLASSES, DataFormatError, load_cls_labels

FIX = ("pick the dataset config of these files (dataset=synthetic for the synthetic set, dataset=voc for "
       "VOC), or give dataset.num_classes=N with dataset.class_names=[...]")


def class_config(cfg) -> Tuple[int, List[str]]:
    """``(num_classes, class_names)`` of the dataset group (VOC's 21 names when neither is given)."""
    ds = cfg.get("dataset") or {}
    names = ds.get("class_names")
    num = ds.get("num_classes")
    if names is None:
        names = list(VOC_CLASSES) if num in (None, len(VOC_CLASSES)) else [str(i) for i in range(int(num))]
    names = [str(n) for n in names]
    if num is not None and int(num) != len(names):
        raise ValueError(f"dataset.num_classes={num} but dataset.class_names has {len(names)} entries; give both "
                         "(or pick a dataset config, e.g. dataset=synthetic)")
    return len(names), names


def listed_class_names(root: Path) -> List[str] | None:
    """``root/class_names.txt`` (one name a line, background first), or None when the root has none."""
    path = Path(root) / "class_names.txt"
    if not path.is_file():
        return None
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _short(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def check_class_names_file(root: Path, names: Sequence[str], what: str = "the config",
                           compare_names: bool = True) -> None:
    """A root written with ``class_names.txt`` must list the classes of ``what`` (only their number when
    ``compare_names`` is false, e.g. for a checkpoint whose names are its own)."""
    listed = listed_class_names(root)
    if listed is None:
        return
    same = listed == list(names) if compare_names else len(listed) == len(names)
    if not same:
        raise ValueError(f"{Path(root) / 'class_names.txt'} lists {len(listed)} classes ({_short(listed)}) but "
                         f"{what} has {len(names)} ({_short(names)}); {FIX}")


def check_cls_labels_width(label_file: Path | None, num_classes: int, what: str = "the config") -> None:
    """The root's image-level labels must have ``num_classes - 1`` foreground entries."""
    if label_file is None:
        return
    try:
        load_cls_labels(label_file, num_classes - 1)
    except DataFormatError as exc:
        raise DataFormatError(f"{exc}; {label_file} was made for another number of classes than {what} "
                              f"({num_classes} with background); {FIX}") from exc


def root_label_file(root: Path) -> Path | None:
    for name in ("cls_labels.npy", "cls_labels.txt"):
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def check_root_classes(root, num_classes: int, names: Sequence[str], what: str = "the config") -> None:
    """Both checks on a VOC-layout root (its own files only; the packaged VOC lists are VOC's)."""
    root = Path(str(root)).expanduser()
    check_class_names_file(root, names, what)
    check_cls_labels_width(root_label_file(root), num_classes, what)


def check_model_classes(dataset_cfg, num_classes: int, class_names: Sequence[str]) -> None:
    """``wsss.infer``: the checkpoint's classes against the data set's.

    The root's ``class_names.txt``, when it has one, is the data set's own word and must agree in number;
    otherwise the dataset config must (``dataset=voc``, the default, has 21).
    """
    root = Path(str(dataset_cfg.root)).expanduser()
    what = f"the checkpoint ({num_classes} classes)"
    listed = listed_class_names(root)
    if listed is not None:
        check_class_names_file(root, class_names, what, compare_names=False)
    else:
        configured = dataset_cfg.get("num_classes")
        if configured is not None and int(configured) != num_classes:
            raise ValueError(f"the checkpoint has {num_classes} classes ({_short(class_names)}) but the dataset "
                             f"config has {configured} and {root} has no class_names.txt to say otherwise; "
                             "infer on the data set the model was made for, or pass its config (dataset=synthetic, "
                             f"or dataset.num_classes={num_classes})")
    check_cls_labels_width(root_label_file(root), num_classes, what)
