"""Recipes as data: every ``conf/experiment/*.yaml`` publishes its numbers in a checked ``published:`` list, the
README's recipes table is what :mod:`wsss.recipes` renders from them, and the list never reaches a constructor."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, REPO
from wsss import recipes as R

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_config_dir_is_the_checkout():
    assert sorted(r.name for r in R.recipes()) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_recipe_has_a_published_list(name):
    recipe = R.load_recipe(CONF_DIR / "experiment" / f"{name}.yaml")
    for p in recipe.published:
        assert set(R.REQUIRED_KEYS) <= set(vars(p))
        assert 0 < p.value < 100 and p.split in R.SPLITS and p.stage in R.STAGES
        assert p.crf in (True, False, None) and p.metric == "mIoU"
        assert p.paper and p.dataset and p.source


def test_known_numbers():
    """Spot checks against the seed READMEs (ChunyanWang1/RTC Model Zoo, twke18/SPML VOC table)."""
    by_name = {r.name: r for r in R.recipes()}
    rtc = {(p.split, p.crf): p.value for p in by_name["rtc_voc"].published}
    assert rtc == {("val", False): 65.34, ("val", True): 67.20, ("test", False): 66.90, ("test", True): 68.76}
    spml = {n: {p.split: p.value for p in by_name[f"spml_voc_{n}"].published} for n in ("tag", "box", "scribble", "point")}
    assert spml == {"tag": {"val": 69.5, "test": 71.6}, "box": {"val": 73.5, "test": 74.7},
                    "scribble": {"val": 76.1, "test": 76.4}, "point": {"val": 73.2, "test": 74.0}}
    assert by_name["rtc_voc_deeplab"].published == () and by_name["deeplabv2_voc"].published == ()


@pytest.mark.parametrize("entry,message", [
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 65.0, "crf": True,
      "stage": "final"}, "missing keys"),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "minival", "value": 65.0, "crf": True,
      "stage": "final", "source": "s"}, "split"),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 0.65, "crf": True,
      "stage": "final", "source": "s"}, None),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 165.0, "crf": True,
      "stage": "final", "source": "s"}, "value"),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 65.0, "crf": "yes",
      "stage": "final", "source": "s"}, "crf"),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 65.0, "crf": True,
      "stage": "second", "source": "s"}, "stage"),
    ({"paper": "x", "metric": "mIoU", "dataset": "VOC2012", "split": "val", "value": 65.0, "crf": True,
      "stage": "final", "source": "s", "extra": 1}, "unknown keys"),
])
def test_schema_rejects(entry, message):
    if message is None:  # a fraction where a percentage belongs is still in (0, 100): accepted, nothing to say
        R.check_entry(entry, "here")
        return
    with pytest.raises(R.RecipeError, match=message):
        R.check_entry(entry, "here")


def test_missing_published_block_is_an_error(tmp_path):
    (tmp_path / "r.yaml").write_text("# @package _global_\ntrainer: {max_steps: 1}\n")
    with pytest.raises(R.RecipeError, match="published"):
        R.recipes(tmp_path)


def test_readme_table_is_current():
    text = (REPO / "README.md").read_text()
    assert R.replace_table(text, R.render_table()) == text, "README is stale: python scripts/readme_tables.py"
    methods = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    assert R.START in methods and R.END in methods


def test_readme_script_check(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{R.START}\n| old |\n{R.END}\n\nafter\n")
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "scripts" / "readme_tables.py"), "--readme",
                                     str(stale), *a], capture_output=True, text=True)
    assert run("--check").returncode == 1
    assert run().returncode == 0
    assert run("--check").returncode == 0
    assert stale.read_text() == f"# x\n\n{R.START}\n{R.render_table()}{R.END}\n\nafter\n"


def test_published_stays_out_of_constructors():
    """`published` sits at the config root, beside the instantiated groups, never inside them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=rtc_voc"])
    GlobalHydra.instance().clear()
    assert len(cfg.published) == 4
    for group in ("dataset", "method", "trainer", "callbacks", "logger", "backbone", "supervision"):
        assert "published" not in (cfg.get(group) or {}), group
