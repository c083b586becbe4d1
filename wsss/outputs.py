"""Where a post-training tool (infer, evaluate, pseudo_label) writes, and the record of what it ran with.

Why: a tool's log, its effective settings and its metrics belong beside its outputs, and a resumed output
file must have been made with the same settings as the run that keeps it.

* Output folder (:func:`output_dir`): ``out_dir=X`` is the folder (the tools' confs also make it Hydra's
  run dir, so ``.hydra/`` and ``<tool>.log`` land in X and no ``outputs/...`` folder is made); without it,
  Hydra's run dir (``outputs/<date>/<time>/``). In a multirun (``-m``) an explicit ``out_dir=X`` is shared
  by the sweep, so job N writes to ``X/N`` (Hydra's sweep dir is X) and says so in its log.
* Settings record (:func:`claim_output_dir`): ``settings.json`` holds the settings that determine the
  outputs; a rerun resumes only when they are equal, else it stops naming both values and the fix.
* ``config.yaml`` (:func:`write_effective_config`): the config with the values that actually ran (e.g.
  the method's inference recipe after command-line overrides).
* :func:`log_errors`: an exception's traceback goes to the run's log file before it propagates.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping, Optional

from omegaconf import OmegaConf

from wsss.data.formats import atomic_write_bytes

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
CONFIG_FILE = "config.yaml"


def _first_given(*values):
    """``${wsss.first:A,B}``: the first value that is not null/empty (Hydra's run dir: out_dir, else a default)."""
    return next((v for v in values if v not in (None, "", "None", "null")), None)


OmegaConf.register_new_resolver("wsss.first", _first_given, replace=True)


# ----- the output folder ---------------------------------------------------------------------
def multirun_job() -> Optional[int]:
    """``hydra.job.num`` inside a ``-m`` sweep, else None (also outside ``@hydra.main``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None
    except Exception:  # noqa: BLE001 - no Hydra context: a plain run
        return None


def output_dir(cfg) -> Path:
    """The folder a tool writes to: ``out_dir`` (``out_dir/<job.num>`` in a multirun), else the run dir."""
    given = cfg.get("out_dir")
    if given in (None, "", "???"):
        if cfg.get("paths") is None:
            raise ValueError("out_dir=... is required (there is no Hydra run dir to default to)")
        return Path(str(cfg.paths.output_dir)).expanduser()
    out = Path(str(given)).expanduser()
    job = multirun_job()
    if job is None:
        return out
    log.info("multirun: out_dir=%s is shared by the sweep's jobs, so job %d writes to %s", out, job, out / str(job))
    return out / str(job)


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"out_dir {out_dir} cannot be written ({exc.strerror or exc}); "
                              "pass out_dir=<a writable folder>") from exc


# ----- the settings record -------------------------------------------------------------------
def fingerprint(path) -> dict:
    """Absolute path, size and mtime of a file (of each file, for a folder such as an SPML release)."""
    path = Path(str(path)).expanduser().absolute()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())[:200]
        return {"path": str(path), "files": {p.relative_to(path).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns]
                                             for p in files}}
    if not path.exists():
        return {"path": str(path)}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _plain(value):
    """JSON-comparable form: containers as lists/dicts, tuples as lists, floats kept."""
    return json.loads(json.dumps(value, default=str))


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, Mapping) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


class SettingsMismatch(ValueError):
    """The output folder holds files made with other settings."""


def claim_output_dir(out_dir: Path, settings: Mapping, overwrite: bool, has_outputs: bool) -> None:
    """Record ``settings`` in ``out_dir/settings.json``, or refuse a folder whose outputs were made otherwise.

    A folder with outputs but no record (written before records existed, or by something else) is refused
    too: its files cannot be shown to belong to these settings. Without outputs (``has_outputs`` false) and
    with ``overwrite=true`` (every output is redone) the record is simply replaced.
    """
    path = out_dir / SETTINGS_FILE
    settings = _plain(dict(settings))
    if not overwrite and has_outputs and path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except ValueError as exc:
            raise SettingsMismatch(f"{path} is not readable JSON ({exc}); pass overwrite=true to redo the outputs "
                                   "or choose another out_dir") from exc
        old, new = _flatten(recorded), _flatten(settings)
        diff = [k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>")]
        # names first (crf.name says more than its kernels), then values both sides have, then the rest
        diff.sort(key=lambda k: (not k.endswith("name"), k not in old or k not in new, k))
        if diff:
            shown = "; ".join(f"{k}: {json.dumps(old.get(k, '<absent>'))} there, {json.dumps(new.get(k, '<absent>'))} "
                              "now" for k in diff[:6])
            more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
            raise SettingsMismatch(
                f"{out_dir} holds outputs made with other settings ({path}): {shown}{more}. Resuming would mix "
                "them; pass overwrite=true to redo every output with the new settings, or choose another out_dir")
    elif not overwrite and has_outputs:
        raise SettingsMismatch(
            f"{out_dir} already holds outputs but no {SETTINGS_FILE} saying which settings made them; pass "
            "overwrite=true to redo them, or choose another out_dir")
    atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())


# ----- the effective config ------------------------------------------------------------------
def write_effective_config(out_dir: Path, cfg, effective: Mapping) -> Path:
    """``config.yaml``: ``cfg`` with ``effective`` (dotted key -> value actually used) filled in, resolved
    where it can be (outside ``@hydra.main``, ``${hydra:...}`` values stay as written)."""
    data = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in effective.items():
        OmegaConf.update(data, key, _plain(value), force_add=True)
    if "paths" in data and "output_dir" in data.paths:
        data.paths.output_dir = str(out_dir)
    try:
        text = OmegaConf.to_yaml(data, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that needs Hydra's runtime
        text = OmegaConf.to_yaml(data, resolve=False)
    path = out_dir / CONFIG_FILE
    atomic_write_bytes(path, text.encode())
    return path


# ----- the log file --------------------------------------------------------------------------
def file_handlers() -> Iterable[logging.Handler]:
    """The log-file handlers of the root logger (Hydra's ``<run dir>/<tool>.log``)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_file(logger: logging.Logger, level: int, text: str, exc_info=None) -> None:
    """Write ``text`` to the log file only (the console already shows it, printed or by Hydra)."""
    record = logger.makeRecord(logger.name, level, "(wsss)", 0, text, None, exc_info)
    for handler in file_handlers():
        if record.levelno >= handler.level:
            handler.handle(record)


@contextmanager
def log_errors(logger: logging.Logger = log):
    """Put the traceback of an exception (KeyboardInterrupt included) in the run's log file, then re-raise.

    Why: Hydra prints a failing task's traceback to stderr only, which left the log of a failed run empty.
    """
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, SystemExit) or exc.code not in (0, None):
            to_log_file(logger, logging.ERROR, f"{type(exc).__name__}: {exc}", sys.exc_info())
        raise
