"""Installs of wsss other than the checkout's editable one carry the Hydra configs of ``conf/``.

The configs live in the top-level ``conf/`` of the checkout; the build copies them into ``wsss/conf/`` of the
wheel (``setup.py``), and ``wsss.config_dir()`` finds either. Every build here is offline (``--no-index``, no
build isolation) and made from a copy of the checkout (an in-tree build would write ``build/`` into a working
tree that others use). Each install goes into its own folder T and runs from another directory, in a Python
started with ``-S``: the editable install of this environment (a ``.pth`` finder in its site-packages, which
would also answer ``import wsss.data``) stays out, and only T provides ``wsss``; the test asserts that every
imported ``wsss`` module comes from the install under test.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

try:  # what the builds below need without build isolation (``pip install -e ".[dev]"`` installs it)
    from setuptools.command import bdist_wheel  # noqa: F401  (built in since setuptools 70.1)
except ImportError:
    pytestmark = pytest.mark.skip(reason='needs setuptools>=70.1 in this environment: pip install -e ".[dev]"')
ENTRY_POINTS = ["train", "infer", "evaluate", "pseudo_label", "spml_memory", "export_voc_test", "pipeline", "predict"]
# top-level folders local to this working tree (or not needed to build); ignored at any depth: caches
_LOCAL_TOP = {".git", ".venv", "build", "dist", "data", "outputs", "multirun", "wandb", "lightning_logs", "tests",
              ".pytest_cache"}
_LOCAL_ANY = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.ckpt", "*.pyc")

# argv: T, this environment's site dirs (newline-separated), then MODULE ARGS... or "-c" CODE. T is added as a
# site dir (its .pth files count: that is how an editable install works); the site dirs then give torch, hydra
# etc. without processing their .pth files.
_RUNNER = """
import runpy, site, sys
target, sites, what = sys.argv[1], sys.argv[2].split(chr(10)), sys.argv[3]
site.addsitedir(target)  # first: its .pth imports a finder module that this environment has under the same name
sys.path.extend(sites)
if what == "-c":
    code, sys.argv = sys.argv[4], ["-c"] + sys.argv[5:]
    exec(compile(code, "<test>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [what] + sys.argv[4:]
    runpy.run_module(what, run_name="__main__", alter_sys=True)
"""

# imports every entry point and prints where wsss, its configs and each loaded wsss module come from
_WHERE = f"""
import importlib, sys
import wsss
for name in {ENTRY_POINTS!r}:
    importlib.import_module("wsss." + name)
from wsss.postprocess.crf import load_preset
assert "CRFPreset" in repr(load_preset("rtc"))
print(wsss.__file__)
print(wsss.config_dir())
for name, mod in sorted(sys.modules.items()):
    if name == "wsss" or name.startswith("wsss."):
        print(getattr(mod, "__file__", None) or "")
"""


def _conf_yaml(conf: Path = REPO / "conf") -> set:
    """Every YAML under ``conf``, relative to it."""
    return {p.relative_to(conf).as_posix() for p in conf.rglob("*.yaml")}


def _run(cmd, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    shown = " ".join(c if len(c) < 200 and "\n" not in c else "<code>" for c in cmd)
    assert proc.returncode == 0, f"{shown} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _run_installed(target: Path, args, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (or ``-c CODE``) with wsss taken from the install in ``target`` only."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith(("WSSS_", "HYDRA_"))}
    sites = "\n".join(site.getsitepackages())
    return _run([sys.executable, "-S", "-c", _RUNNER, target, sites, *args], cwd=cwd, env=env)


def _source_copy(dest: Path) -> Path:
    def ignore(folder, names):
        local = set(_LOCAL_ANY(folder, names))
        return local | (set(names) & _LOCAL_TOP if Path(folder) == REPO else set())

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def _pip_install(wheel: Path, target: Path) -> Path:
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", target, wheel],
         cwd=wheel.parent)
    return target


def _build_wheel(src: Path, out: Path) -> Path:
    """``pip wheel SRC``, as ``pip install .`` builds it: offline, with the setuptools of this environment."""
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", out, src], cwd=src)
    (wheel,) = out.glob("wsss-*.whl")
    return wheel


def _wheel_files(wheel: Path) -> list:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def _wheel_conf(wheel: Path) -> set:
    return {n[len("wsss/conf/"):] for n in _wheel_files(wheel) if n.startswith("wsss/conf/")}


def _check_where(out: str, package: Path, conf: Path) -> None:
    """``_WHERE``'s output: wsss, its configs and every loaded wsss module come from ``package`` / ``conf``."""
    lines = out.splitlines()
    assert Path(lines[0]).resolve() == (package / "__init__.py").resolve(), lines[:2]
    assert Path(lines[1]).resolve() == conf.resolve(), lines[:2]
    assert _conf_yaml(Path(lines[1])) == _conf_yaml(), lines[1]
    modules = [Path(p).resolve() for p in lines[2:] if p]
    assert len(modules) > 10
    assert all(p.is_relative_to(package.resolve()) for p in modules), [p for p in modules
                                                                       if not p.is_relative_to(package.resolve())]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return _build_wheel(_source_copy(tmp / "src"), tmp / "dist")


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    return _pip_install(wheel, tmp_path_factory.mktemp("site"))


def test_wheel_contains_every_conf_yaml(wheel):
    want = _conf_yaml()
    assert "train.yaml" in want and len(want) > 20
    assert _wheel_conf(wheel) == want
    names = _wheel_files(wheel)
    assert "wsss/paths.py" in names and "wsss/data/voc.py" in names
    assert any(n.startswith("wsss/resources/voc12/") for n in names)  # the other package data still ships
    assert not any(n.startswith(("conf/", "tests/")) for n in names)


def test_sdist_carries_conf_and_builds_the_same_wheel(tmp_path):
    """``python -m build`` makes the wheel from the sdist: the sdist must hold ``conf/`` and ``setup.py``."""
    src = _source_copy(tmp_path / "src")
    out = tmp_path / "sdist"
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; b.build_sdist(sys.argv[1])",
          out], cwd=src)
    (sdist,) = out.glob("wsss-*.tar.gz")
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert _conf_yaml(unpacked / "conf") == _conf_yaml()
    assert _wheel_conf(_build_wheel(unpacked, tmp_path / "dist")) == _conf_yaml()


def test_installed_wheel_imports_its_own_copy(installed, tmp_path):
    _check_where(_run_installed(installed, ["-c", _WHERE], tmp_path).stdout, installed / "wsss",
                 installed / "wsss" / "conf")


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_installed_wheel_entry_point_help(installed, tmp_path, entry):
    """``python -m wsss.<entry> --help`` composes its config from the installed package, from any directory."""
    proc = _run_installed(installed, [f"wsss.{entry}", "--help"], tmp_path)
    assert "== Config ==" in proc.stdout, proc.stdout[-3000:]
    assert "rtc_voc" in proc.stdout, proc.stdout[-3000:]  # the config groups (experiment=...) are found
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lenient", "strict"])
def test_editable_install_reads_checkout_conf(tmp_path, mode):
    """``pip install -e .`` (the PEP 660 wheel that pip installs), default and strict mode: wsss runs from the
    checkout and its entry points compose the checkout's ``conf/`` from any directory."""
    src = _source_copy(tmp_path / "src")
    out = tmp_path / "dist"
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
          "b.build_editable(sys.argv[1], {'editable_mode': 'strict'} if sys.argv[2] == 'strict' else None)",
          out, mode], cwd=src)
    (wheel,) = out.glob("wsss-*.whl")
    target = _pip_install(wheel, tmp_path / "site")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = _run_installed(target, ["-c", _WHERE], run_dir).stdout
    # lenient: the checkout itself; strict: a link tree in build/ whose links (resolved) lead to the checkout
    _check_where(where, src / "wsss", src / "conf")
    assert ("__editable__" in where.splitlines()[0]) == (mode == "strict"), where.splitlines()[0]
    proc = _run_installed(target, ["wsss.train", "--help"], run_dir)
    assert "== Config ==" in proc.stdout and "rtc_voc" in proc.stdout, proc.stdout[-3000:]


def test_checkout_config_dir_is_top_level_conf():
    """In the checkout (the editable install of CI), the configs are read from the top-level ``conf/``."""
    import wsss

    assert Path(wsss.config_dir()) == REPO / "conf"
    assert not (REPO / "wsss" / "conf").exists(), "conf/ must stay at the top level of the checkout"
