"""The model ``wsss.infer`` runs: a wsss Lightning checkpoint, or an official release read by the method's importer.

Which methods have a release, how to recognise one and which recipe it needs come from the method registry
(:mod:`wsss.methods.registry`); nothing here names a method.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional

import torch

from wsss.engine import build_method, load_method_checkpoint
from wsss.methods.registry import recognise_release, releases

log = logging.getLogger(__name__)


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


def describe_checkpoint(obj) -> str:
    """What a loaded file that no importer recognises looks like, in words."""
    from wsss.checkpoints.imagenet import describe_state_dict

    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return describe_state_dict(obj)
    if isinstance(obj, Mapping):
        return f"a dict with keys {[str(k) for k in list(obj)[:6]]}"
    return f"a {type(obj).__name__}"


def guess_release(path: Path) -> str:
    """``"; it looks like ... (method=NAME)"`` for a file one of the importers recognises, else a description."""
    name = recognise_release(path)
    if name is not None:
        return f"; it looks like {releases()[name].title}: add method={name}"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable (or a folder): the caller's message stands alone
        return ""
    return f"; it looks like {describe_checkpoint(obj)}"


def official_experiment(method: str, path: Path) -> str:
    """The published recipe (``conf/experiment``) whose architecture an official file of ``method`` needs."""
    known = releases()
    if method not in known:
        raise ValueError(f"{path}: not a wsss Lightning checkpoint, and method '{method}' has no official-checkpoint "
                         f"importer (methods with one: {sorted(known)})")
    return known[method].experiment(path)


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
                         f"(importers: {sorted(releases())}){guess_release(ckpt)}")
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


def run_with_model(cfg, config_name: str, run, log):
    """The body of every entry point that scores with a model (infer, predict): the model
    from the command line (:func:`model_from_cli`), then ``run(cfg, model)``, a failure's traceback in the log."""
    from wsss.outputs import log_errors

    with log_errors(log):
        cfg, model = model_from_cli(cfg, config_name)
        return run(cfg, model)
