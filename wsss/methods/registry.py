"""One registry of methods: each method module registers its class, and the class carries what the entry points
need (its official-checkpoint :class:`Release`, published recipes, extra tools), so ``wsss.infer``,
``wsss.inference.loading`` and the other entry points never name a method.

Registration is a decorator next to the method's own code::

    @register_method
    class CAMModule(WSSSModule):
        method_name = "cam"

Every module of the :mod:`wsss.methods` package is imported by :func:`method_classes`, so a new method is found
without touching any other file.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from wsss.registry import Registry

METHODS: Registry[type] = Registry("method")


def _same_path(path: Path) -> Path:
    return path


@dataclass(frozen=True)
class Release:
    """How a method reads its authors' released checkpoint.

    * ``load(model, path)``: strictly loads the file into a built model (the method's importer);
    * ``detect(obj)``: whether a ``torch.load``-ed object has the release's key layout (to suggest ``method=``);
    * ``experiment(path)``: the published recipe (``conf/experiment``) whose architecture the file needs;
    * ``locate(path)``: the file of a release given as a folder (default: the path itself);
    * ``title``: the release in words, for messages (``"an SPML release"``).
    """

    load: Callable[[Any, str], Any]
    detect: Callable[[Any], bool]
    experiment: Callable[[Path], str]
    title: str
    locate: Callable[[Path], Path] = _same_path


def register_method(cls: type) -> type:
    """Class decorator: register a ``WSSSModule`` subclass under its ``method_name``."""
    return METHODS.register(cls.method_name)(cls)


def method_classes() -> Dict[str, type]:
    """Every registered method, after importing each module of :mod:`wsss.methods` (name -> class)."""
    import wsss.methods as package

    for mod in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{mod.name}")
    return {name: METHODS.get(name) for name in METHODS.names()}


def releases() -> Dict[str, Release]:
    """Methods with an official-checkpoint importer -> their :class:`Release`."""
    return {name: cls.release for name, cls in method_classes().items() if cls.release is not None}


def tool_owners() -> Dict[str, list]:
    """Every extra tool's config key (e.g. ``retrieval_memory``) -> the methods that have it."""
    owners: Dict[str, list] = {}
    for name, cls in method_classes().items():
        for key in cls.tools:
            owners.setdefault(key, []).append(name)
    return owners


def recognise_release(path: Path) -> Optional[str]:
    """The method whose release ``path`` looks like (by key layout), or None; each file is read once."""
    import torch

    loaded: Dict[Path, Any] = {}
    for name, release in releases().items():
        try:
            file = release.locate(path)
            if file not in loaded:
                loaded[file] = torch.load(file, map_location="cpu", weights_only=True)
            if release.detect(loaded[file]):
                return name
        except Exception:  # noqa: BLE001 - unreadable or not this layout: ask the next method
            continue
    return None
