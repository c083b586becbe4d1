"""run.json: the code version (git commit, uncommitted changes), libraries and device behind a run's numbers."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from wsss.provenance import RunRecord, checkpoint_facts, source_state


def test_source_state_names_the_commit_of_a_checkout():
    state = source_state()
    assert state["version"]
    if state["commit"] is not None:  # a git checkout (CI clones one); an installed wheel has no commit
        assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_tree_is_reported(tmp_path, monkeypatch):
    """A copy of the package inside a fresh repository: clean after the commit, dirty after an edit."""
    import wsss.provenance as prov

    repo = tmp_path / "repo"
    (repo / "wsss").mkdir(parents=True)
    (repo / "wsss" / "provenance.py").write_text("# stand-in\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    monkeypatch.setattr(prov, "__file__", str(repo / "wsss" / "provenance.py"))
    prov.source_state.cache_clear()
    try:
        clean = prov.source_state()
        (repo / "wsss" / "provenance.py").write_text("# edited\n")
        prov.source_state.cache_clear()
        dirty = prov.source_state()
    finally:
        prov.source_state.cache_clear()
    assert clean["dirty"] is False and dirty["dirty"] is True and clean["commit"] == dirty["commit"]


def test_record_is_written_at_start_and_closed_with_wall_time(tmp_path):
    rec = RunRecord.start_tool(tmp_path, "infer", seed=3, details={"split": "val"})
    first = json.loads((tmp_path / "run.json").read_text())
    assert first["status"] == "running" and first["seed"] == 3 and first["details"] == {"split": "val"}
    rec.finish(images=5)
    done = json.loads((tmp_path / "run.json").read_text())
    assert done["status"] == "done" and done["wall_s"] >= 0 and done["details"] == {"split": "val", "images": 5}
    assert set(done["libraries"]) >= {"torch", "pytorch-lightning", "hydra-core", "numpy"}


def test_checkpoint_facts(tmp_path):
    import torch

    torch.save({"epoch": 4, "global_step": 120, "state_dict": {}}, tmp_path / "a.ckpt")
    assert checkpoint_facts(tmp_path / "a.ckpt")["epoch"] == 4
    assert checkpoint_facts(tmp_path / "a.ckpt")["global_step"] == 120
    (tmp_path / "release").mkdir()
    assert checkpoint_facts(tmp_path / "release")["epoch"] is None
