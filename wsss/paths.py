"""Where the Hydra configs are: :func:`config_dir`.

The configs live in the top-level ``conf/`` of the source checkout (read in place by an editable install). A
wheel (``pip install .``) carries a copy in ``wsss/conf/``: ``setup.py`` copies ``conf/**/*.yaml`` there at
build time. Every ``@hydra.main`` entry point and :func:`wsss.postprocess.crf.load_preset` read the folder
this returns.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of the Hydra config folder: the installed ``wsss/conf`` if present, else the checkout's
    ``conf/``. A string, as ``hydra.main(config_path=...)`` wants."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"wsss: no Hydra configs (train.yaml) in {_PACKAGE / 'conf'} (installed package) or "
        f"{_PACKAGE.parent / 'conf'} (source checkout); reinstall with `pip install .` or `pip install -e .` "
        "from a checkout of the repository")
