"""Recipes as data: the published recipes (``conf/experiment/*.yaml``) and the numbers their authors published.

Each recipe file has a top-level ``published:`` list (it lands at the root of the composed config, where nothing
instantiates it). An entry is::

    {paper: "RTC (Wang et al.)", metric: mIoU, dataset: VOC2012, split: val, value: 65.34, crf: false,
     stage: final, source: "ChunyanWang1/RTC README.md:42 (Model Zoo)", note: "..."}   # note is optional

``split`` is one of :data:`SPLITS`, ``stage`` one of :data:`STAGES` (``seed``: CAM seeds, ``pseudo``: pseudo
labels, ``final``: the segmentation result the paper reports), ``value`` a percentage in (0, 100), ``crf`` true,
false, or null where the source does not say. ``published: []`` (with a comment in the file) means the recipe has
no number of its own, e.g. a second stage whose score depends on the labels it is given.

:func:`recipes` reads the files from :func:`wsss.paths.config_dir` (no Hydra composition: a recipe's own file is
what it publishes) and checks every entry; :func:`render_table` is the README's "Recipes and published numbers"
table, which ``scripts/readme_tables.py`` writes between :data:`START` and :data:`END`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from wsss.paths import config_dir

SPLITS = ("val", "test", "train")
STAGES = ("seed", "pseudo", "final")
REQUIRED_KEYS = ("paper", "metric", "dataset", "split", "value", "crf", "stage", "source")
OPTIONAL_KEYS = ("note",)
START = "<!-- recipes:start -->"
END = "<!-- recipes:end -->"


class RecipeError(ValueError):
    """A recipe's ``published`` block does not follow the schema; the message names the file and the entry."""


class _Number(float):
    """A float that remembers how the YAML file wrote it (``67.20`` stays ``67.20`` in the table)."""

    text: str


class _Loader(yaml.SafeLoader):
    pass


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    number = _Number(yaml.SafeLoader.construct_yaml_float(loader, node))
    number.text = node.value
    return number


_Loader.add_constructor("tag:yaml.org,2002:float", _float)


@dataclass(frozen=True)
class Published:
    paper: str
    metric: str
    dataset: str
    split: str
    value: float
    crf: Optional[bool]
    stage: str
    source: str
    note: Optional[str] = None

    @property
    def value_text(self) -> str:
        return getattr(self.value, "text", None) or str(self.value)


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    published: tuple[Published, ...]


def experiment_dir() -> Path:
    return Path(config_dir()) / "experiment"


def check_entry(entry, where: str) -> Published:
    """One ``published`` entry as :class:`Published`; :class:`RecipeError` naming ``where`` if it is malformed."""
    if not isinstance(entry, dict):
        raise RecipeError(f"{where}: an entry must be a mapping, got {entry!r}")
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise RecipeError(f"{where}: missing keys {missing}, unknown keys {unknown} (schema: {list(REQUIRED_KEYS)} "
                          f"+ optional {list(OPTIONAL_KEYS)})")
    for key in ("paper", "metric", "dataset", "source"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise RecipeError(f"{where}: {key} must be a non-empty string, got {entry[key]!r}")
    if entry["split"] not in SPLITS:
        raise RecipeError(f"{where}: split {entry['split']!r} is not one of {SPLITS}")
    if entry["stage"] not in STAGES:
        raise RecipeError(f"{where}: stage {entry['stage']!r} is not one of {STAGES}")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100:
        raise RecipeError(f"{where}: value must be a percentage in (0, 100), got {value!r}")
    if entry["crf"] not in (True, False, None):
        raise RecipeError(f"{where}: crf must be true, false or null (not stated), got {entry['crf']!r}")
    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise RecipeError(f"{where}: note must be a string, got {note!r}")
    return Published(**{k: entry.get(k) for k in REQUIRED_KEYS + OPTIONAL_KEYS})


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    data = yaml.load(path.read_text(), Loader=_Loader) or {}
    if "published" not in data:
        raise RecipeError(f"{path}: no top-level `published:` list (use `published: []` and a comment when the "
                          "recipe has no published number of its own)")
    entries = data["published"]
    if not isinstance(entries, list):
        raise RecipeError(f"{path}: `published` must be a list, got {type(entries).__name__}")
    return Recipe(path.stem, path, tuple(check_entry(e, f"{path} published[{i}]") for i, e in enumerate(entries)))


def recipes(directory: Optional[Path] = None) -> list[Recipe]:
    """Every ``experiment/*.yaml`` recipe, by name, with its checked ``published`` entries."""
    directory = Path(directory) if directory is not None else experiment_dir()
    return [load_recipe(p) for p in sorted(directory.glob("*.yaml"))]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(items: Optional[list[Recipe]] = None) -> str:
    """The Markdown table of every recipe's published numbers, one row per entry (a recipe without a number of
    its own gets one row that says so)."""
    items = recipes() if items is None else items
    rows = ["| recipe | paper | data set | split | stage | CRF | mIoU (%) | source | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    crf = {True: "yes", False: "no", None: "not stated"}
    for recipe in items:
        name = f"`experiment={recipe.name}`"
        if not recipe.published:
            rows.append(f"| {name} | | | | | | none of its own | | see the comment in `conf/experiment/"
                        f"{recipe.name}.yaml` |")
        for p in recipe.published:
            rows.append("| " + " | ".join([name, _cell(p.paper), _cell(p.dataset), p.split, p.stage, crf[p.crf],
                                           p.value_text, _cell(p.source), _cell(p.note or "")]) + " |")
    return "\n".join(rows) + "\n"


def replace_table(text: str, table: str) -> str:
    """``text`` with what lies between the :data:`START` and :data:`END` lines replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise RecipeError(f"the README needs exactly one {START} line followed by one {END} line")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"
