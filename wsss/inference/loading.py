"""The model ``wsss.infer`` runs: a wsss Lightning checkpoint, or an official release read by the method's importer."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Optional

import torch

from wsss.engine import build_method, load_method_checkpoint

log = logging.getLogger(__name__)

#: methods with an importer for the authors' released checkpoints -> module with ``official_experiment(path)``
OFFICIAL_IMPORTERS = {"rtc": "wsss.checkpoints.rtc", "spml": "wsss.checkpoints.spml"}


def read_wsss_checkpoint_info(path: Path) -> Optional[dict]:
    """``checkpoint["wsss"]`` of a wsss Lightning checkpoint, or None for any other file or folder."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint (old format, other tools): not ours
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001
            return None
    info = obj.get("wsss") if isinstance(obj, dict) else None
    return dict(info) if isinstance(info, dict) else None


def guess_release(path: Path) -> str:
    """``"; it looks like ... (method=NAME)"`` for a file one of the importers recognises, else ``""``."""
    from wsss.checkpoints import rtc, spml

    try:
        if path.is_dir():
            path = spml.find_checkpoint_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: the caller's message stands alone
        return ""
    if rtc.is_official(obj):
        return "; it looks like the RTC release: add method=rtc"
    if isinstance(obj, dict) and {"embedding_model", "prediction_model"} <= set(obj):
        return "; it looks like an SPML release: add method=spml"
    return f"; it looks like {rtc.describe(obj)}"


def official_experiment(method: str, path: Path) -> str:
    """The published recipe (``conf/experiment``) whose architecture an official file of ``method`` needs."""
    if method not in OFFICIAL_IMPORTERS:
        raise ValueError(f"{path}: not a wsss Lightning checkpoint, and method '{method}' has no official-checkpoint "
                         f"importer (methods with one: {sorted(OFFICIAL_IMPORTERS)})")
    return importlib.import_module(OFFICIAL_IMPORTERS[method]).official_experiment(path)


def official_recipe_cfg(cfg, config_name: str):
    """With ``method=NAME`` and an authors' release (not a wsss checkpoint) but no ``experiment=``, compose
    ``config_name`` again with the published recipe that fits the release (e.g. ``rtc_voc``: ResNet-38, 21
    classes). Call from inside a ``@hydra.main`` entry point."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    method = choices.get("method")
    ckpt = Path(str(cfg.ckpt)).expanduser()
    if method is None or choices.get("experiment") is not None or not ckpt.exists():
        return cfg
    if read_wsss_checkpoint_info(ckpt) is not None:
        return cfg
    experiment = official_experiment(method, ckpt)
    log.info("%s: an official %s release; using the architecture of experiment=%s", ckpt, method, experiment)
    overrides = list(HydraConfig.get().overrides.task) + [f"experiment={experiment}"]
    return compose(config_name=config_name, overrides=overrides)


def load_for_inference(cfg, ckpt: Path, method_choice: Optional[str]):
    """Build the model of ``ckpt``; ``method_choice`` is the ``method=`` the user gave (or None)."""
    if not ckpt.exists():
        raise FileNotFoundError(f"ckpt not found: {ckpt}; pass ckpt=outputs/.../checkpoints/last.ckpt or an "
                                "official release with method=<name>")
    info = read_wsss_checkpoint_info(ckpt)
    if info is not None:
        if method_choice is not None and info.get("method") != method_choice:
            raise ValueError(f"{ckpt} is a checkpoint of method '{info.get('method')}', not '{method_choice}'; "
                             f"drop method= or pass method={info.get('method')}")
        return load_method_checkpoint(ckpt)
    if method_choice is None or cfg.get("method") is None:
        raise ValueError(f"{ckpt} is not a wsss Lightning checkpoint; for an authors' release add method=<name> "
                         f"(importers: {sorted(OFFICIAL_IMPORTERS)}){guess_release(ckpt)}")
    model = build_method(cfg)
    model.load_official(str(ckpt))
    return model


def model_from_cli(cfg, config_name: str):
    """What every inference entry point does first, from inside ``@hydra.main``: torch threads, the official
    recipe for an authors' release (:func:`official_recipe_cfg`), and the model. Returns ``(cfg, model)``."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    cfg = official_recipe_cfg(cfg, config_name)
    method_choice = HydraConfig.get().runtime.choices.get("method")
    return cfg, load_for_inference(cfg, Path(str(cfg.ckpt)).expanduser(), method_choice)
