"""``wsss.evaluate`` against an independent re-implementation of YudeWang/SEAM ``evaluation.py``.

``seam_reference`` below follows SEAM's loop literally: for each threshold it re-reads every file,
builds the 21-channel float32 tensor (channel 0 = threshold, channel k+1 = score k, absent = 0),
takes ``np.argmax``, and accumulates TP / P / T with ``gt < 255`` as the valid mask. It shares no
code with the module under test.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from wsss.data.formats import VOC_CLASSES, DataFormatError, save_score_dict, write_label_png
from wsss.evaluation.run import run
from wsss.metrics.folders import evaluate_dir

REPO = Path(__file__).resolve().parents[1]
N = 21
NAMES = list(VOC_CLASSES)


def seam_reference(pred_dir, gt_dir, names, input_type, threshold=None, num_cls=N):
    TP, P, T = np.zeros(num_cls, np.int64), np.zeros(num_cls, np.int64), np.zeros(num_cls, np.int64)
    for name in names:
        if input_type == "png":
            predict = np.array(Image.open(os.path.join(pred_dir, f"{name}.png")))
        else:
            d = np.load(os.path.join(pred_dir, f"{name}.npy"), allow_pickle=True).item()
            h, w = list(d.values())[0].shape
            tensor = np.zeros((num_cls, h, w), np.float32)
            for key in d.keys():
                tensor[key + 1] = d[key]
            tensor[0, :, :] = threshold
            predict = np.argmax(tensor, axis=0).astype(np.uint8)
        gt = np.array(Image.open(os.path.join(gt_dir, f"{name}.png")))
        cal = gt < 255
        mask = (predict == gt) * cal
        for i in range(num_cls):
            P[i] += np.sum((predict == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * mask)
    iou = TP / (T + P - TP + 1e-10)
    union = T + P - TP
    present = np.where(union > 0, TP / np.maximum(union, 1), np.nan)
    return {"IoU_seam": iou, "mIoU_seam": float(np.mean(iou)), "mIoU": float(np.nanmean(present)),
            "precision": np.where(P > 0, TP / np.maximum(P, 1), np.nan),
            "recall": np.where(T > 0, TP / np.maximum(T, 1), np.nan)}


def make_dataset(root: Path, num=7, seed=0):
    """GT palette PNGs with 255 bands, score dicts with exact ties on the 0.01 grid, PNG predictions."""
    rng = np.random.default_rng(seed)
    gt_dir, npy_dir, png_dir = root / "SegmentationClass", root / "scores", root / "pred"
    ids = [f"2007_{i:06d}" for i in range(num)]
    key_sets = [[0], [4, 11], [0, 1, 2], list(range(20)), [14], [2, 3, 19], [7]]
    for i, name in enumerate(ids):
        h, w = 20 + 3 * i, 28 - i
        keys = key_sets[i % len(key_sets)]
        gt = rng.choice([0] + [k + 1 for k in keys] + [9], size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.12] = 255
        write_label_png(gt_dir / f"{name}.png", gt)
        scores = {k: rng.integers(-3, 65, size=(h, w)) / 100.0 for k in keys}
        if i == 2:  # float64 on disk: SEAM casts on assignment into its float32 tensor, so 0.2 ties t=0.2
            npy_dir.mkdir(parents=True, exist_ok=True)
            np.save(npy_dir / f"{name}.npy", scores)
        else:
            save_score_dict(npy_dir / f"{name}.npy", {k: v.astype(np.float32) for k, v in scores.items()})
        pred = np.where(rng.random((h, w)) < 0.5, gt, rng.integers(0, N, size=(h, w))).astype(np.uint8)
        pred[rng.random((h, w)) < 0.2] = 0
        pred[rng.random((h, w)) < 0.05] = 255  # "no label" in a pseudo label
        write_label_png(png_dir / f"{name}.png", pred, palette=(i % 2 == 0))
    (root / "list.txt").write_text("\n".join(ids) + "\n")
    return ids, gt_dir, npy_dir, png_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ids, gt_dir, npy_dir, png_dir = make_dataset(root)
    return root, ids, gt_dir, npy_dir, png_dir


def assert_agrees(res, ref):
    assert abs(res["mIoU_seam"] - ref["mIoU_seam"]) < 1e-6
    assert abs(res["mIoU"] - ref["mIoU"]) < 1e-6
    np.testing.assert_allclose([res["IoU_seam"][n] for n in NAMES], ref["IoU_seam"], atol=1e-6, rtol=0)
    for key in ("precision", "recall"):
        ours = np.array([np.nan if res[key][n] is None else res[key][n] for n in NAMES])
        np.testing.assert_allclose(ours, ref[key], atol=1e-6, rtol=0)


def test_png_agrees_with_seam(data):
    root, ids, gt_dir, _, png_dir = data
    res = evaluate_dir(png_dir, gt_dir, ids, "png", N, NAMES)
    ref = seam_reference(png_dir, gt_dir, ids, "png")
    assert_agrees(res, ref)
    assert sum(res["unlabelled"]) > 0  # the test exercises predictions of 255


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.37, 0.59, 0.7])
def test_npy_agrees_with_seam(data, threshold):
    root, ids, gt_dir, npy_dir, _ = data
    res = evaluate_dir(npy_dir, gt_dir, ids, "npy", N, NAMES, threshold=threshold)
    assert_agrees(res, seam_reference(npy_dir, gt_dir, ids, "npy", threshold))


def test_curve_agrees_with_seam_at_every_threshold(data):
    root, ids, gt_dir, npy_dir, _ = data
    thresholds = [i / 100.0 for i in range(60)]
    res = evaluate_dir(npy_dir, gt_dir, ids, "npy", N, NAMES, curve_thresholds=thresholds, workers=2)
    ref = [seam_reference(npy_dir, gt_dir, ids, "npy", t) for t in thresholds]
    np.testing.assert_allclose(res["curve"]["mIoU_seam"], [r["mIoU_seam"] for r in ref], atol=1e-6, rtol=0)
    np.testing.assert_allclose(res["curve"]["mIoU"], [r["mIoU"] for r in ref], atol=1e-6, rtol=0)
    best = int(np.argmax([r["mIoU_seam"] for r in ref]))
    assert res["curve"]["best"]["threshold"] == thresholds[best] == res["threshold"]
    assert_agrees(res, ref[best])  # without threshold= the table is at the best threshold
    # ties exist: some scores equal a threshold exactly in float32
    d = np.load(npy_dir / f"{ids[0]}.npy", allow_pickle=True).item()
    assert np.isin(d[0], np.float32(thresholds)).any()


def test_workers_do_not_change_numbers(data):
    root, ids, gt_dir, npy_dir, png_dir = data
    one = evaluate_dir(npy_dir, gt_dir, ids, "npy", N, NAMES, threshold=0.25, curve_thresholds=[0.1, 0.3])
    two = evaluate_dir(npy_dir, gt_dir, ids, "npy", N, NAMES, threshold=0.25, curve_thresholds=[0.1, 0.3], workers=2)
    assert one == two


def test_hand_computed_confusion(tmp_path):
    """GT [[0,0,1,1],[2,2,255,1]], prediction [[0,1,1,1],[2,0,2,255]], 4 classes (class 3 absent).

    Confusion (rows GT): g0 -> p0 1, p1 1; g1 -> p1 2, no label 1; g2 -> p0 1, p2 1.
    T = 2,3,2,0  P = 2,3,1,0  TP = 1,2,1,0  IoU = 1/3, 1/2, 1/2, (absent)
    """
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 255]], np.uint8)
    write_label_png(tmp_path / "gt" / "a.png", gt)
    write_label_png(tmp_path / "pred" / "a.png", pred, palette=False)
    names = ["bg", "x", "y", "z"]
    res = evaluate_dir(tmp_path / "pred", tmp_path / "gt", ["a"], "png", 4, names)
    assert res["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert res["unlabelled"] == [0, 1, 0, 0]
    assert res["IoU"]["bg"] == pytest.approx(1 / 3)
    assert res["IoU"]["x"] == pytest.approx(0.5) and res["IoU"]["y"] == pytest.approx(0.5)
    assert res["IoU"]["z"] is None
    assert res["IoU_seam"]["z"] == 0.0
    assert res["mIoU"] == pytest.approx(4 / 9, abs=1e-12)
    assert res["mIoU_seam"] == pytest.approx(1 / 3, abs=1e-9)
    assert res["precision"]["x"] == pytest.approx(2 / 3) and res["recall"]["y"] == pytest.approx(0.5)
    assert res["pixel_acc"] == pytest.approx(4 / 7)


def test_empty_score_dict_predicts_background(tmp_path):
    gt = np.array([[0, 3], [255, 0]], np.uint8)
    write_label_png(tmp_path / "gt" / "a.png", gt)
    save_score_dict(tmp_path / "s" / "a.npy", {})
    res = evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES, threshold=0.0)
    assert res["confusion"][0][0] == 2 and res["confusion"][3][0] == 1


# ----- bad input -----------------------------------------------------------------------------
def test_missing_files_are_listed(data):
    root, ids, gt_dir, npy_dir, _ = data
    with pytest.raises(FileNotFoundError, match=r"1 of 8 prediction files missing.*nope\.npy"):
        evaluate_dir(npy_dir, gt_dir, ids + ["nope"], "npy", N, NAMES, threshold=0.2)
    with pytest.raises(FileNotFoundError, match="prediction files missing"):
        evaluate_dir(npy_dir, gt_dir, ids, "png", N, NAMES)
    with pytest.raises(FileNotFoundError, match="pred_dir"):
        evaluate_dir(root / "absent", gt_dir, ids, "png", N, NAMES)


def test_bad_score_files(tmp_path):
    gt = np.zeros((4, 5), np.uint8)
    write_label_png(tmp_path / "gt" / "a.png", gt)
    save_score_dict(tmp_path / "s" / "a.npy", {0: np.zeros((4, 6), np.float32)})
    with pytest.raises(DataFormatError, match=r"a\.npy.*4x6.*4x5"):
        evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES, threshold=0.2)
    np.save(tmp_path / "s" / "a.npy", np.zeros((20, 4, 5), np.float32))
    with pytest.raises(DataFormatError, match=r"a\.npy.*expected a dict"):
        evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES, threshold=0.2)
    save_score_dict(tmp_path / "s" / "a.npy", {0: np.full((4, 5), np.nan, np.float32)})
    with pytest.raises(DataFormatError, match="NaN"):
        evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES, threshold=0.2)
    save_score_dict(tmp_path / "s" / "a.npy", {25: np.zeros((4, 5), np.float32)})
    with pytest.raises(DataFormatError, match="class index 25"):
        evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES, threshold=0.2)
    with pytest.raises(ValueError, match="threshold=T"):
        evaluate_dir(tmp_path / "s", tmp_path / "gt", ["a"], "npy", N, NAMES)


def test_bad_png_files(tmp_path):
    write_label_png(tmp_path / "gt" / "a.png", np.zeros((4, 5), np.uint8))
    (tmp_path / "p").mkdir()
    Image.new("RGB", (5, 4)).save(tmp_path / "p" / "a.png")
    with pytest.raises(DataFormatError, match=r"a\.png.*mode 'RGB'"):
        evaluate_dir(tmp_path / "p", tmp_path / "gt", ["a"], "png", N, NAMES)
    write_label_png(tmp_path / "p" / "a.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataFormatError, match="original image size"):
        evaluate_dir(tmp_path / "p", tmp_path / "gt", ["a"], "png", N, NAMES)
    write_label_png(tmp_path / "p" / "a.png", np.full((4, 5), 40, np.uint8))
    with pytest.raises(DataFormatError, match="class ids"):
        evaluate_dir(tmp_path / "p", tmp_path / "gt", ["a"], "png", N, NAMES)


def _cfg(**kw):
    base = {"type": "png", "threshold": None, "curve": False, "curve_thresholds": None, "workers": 1,
            "progress": False, "logger": None, "dataset": {"num_classes": N, "class_names": NAMES}}
    base.update(kw)
    return OmegaConf.create(base)


def test_run_errors(data, tmp_path):
    root, ids, gt_dir, npy_dir, png_dir = data
    with pytest.raises(FileNotFoundError, match="split list not found"):
        run(_cfg(pred_dir=str(png_dir), gt_dir=str(gt_dir), list=str(root / "no.txt"), out=str(tmp_path / "m.json")))
    with pytest.raises(ValueError, match="curve=true needs type=npy"):
        run(_cfg(pred_dir=str(png_dir), gt_dir=str(gt_dir), list=str(root / "list.txt"), curve=True,
                 out=str(tmp_path / "m.json")))
    (root / "class_names.txt").write_text("background\na\nb\n")
    try:
        with pytest.raises(ValueError, match="dataset=synthetic"):
            run(_cfg(pred_dir=str(png_dir), gt_dir=str(gt_dir), list=str(root / "list.txt"),
                     out=str(tmp_path / "m.json")))
    finally:
        (root / "class_names.txt").unlink()


def test_cli_curve_writes_json_plots_csv(data, tmp_path):
    root, ids, gt_dir, npy_dir, _ = data
    out = tmp_path / "res" / "m.json"
    cmd = [sys.executable, "-m", "wsss.evaluate", f"pred_dir={npy_dir}", f"gt_dir={gt_dir}",
           f"list={root / 'list.txt'}", "type=npy", "curve=true", f"out={out}", "workers=2", "progress=false",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "best background threshold" in proc.stdout and "(SEAM: mean over all 21 classes" in proc.stdout
    res = json.loads(out.read_text())
    threshold = res["protocol"]["background"]["threshold"]
    assert res["protocol"]["background"]["chosen"] == "curve" and res["details"]["threshold"] == threshold
    ref = seam_reference(npy_dir, gt_dir, ids, "npy", threshold)
    assert abs(res["list/mIoU_seam"] - ref["mIoU_seam"]) < 1e-6  # stored as fractions, to SEAM's numbers
    assert len(res["details"]["curve"]["thresholds"]) == 60
    # one unit and one name scheme: fractions with 4 decimals, <list stem>/<metric>, main number last
    assert f"list/mIoU_seam={res['list/mIoU_seam']:.4f}" in proc.stdout and "%" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"list/mIoU={res['list/mIoU']:.4f}"
    for suffix in ("_curve.png", "_per_class.png", "_per_class.csv"):
        assert (out.parent / f"m{suffix}").stat().st_size > 0
    lines = (out.parent / "m_per_class.csv").read_text().splitlines()
    assert lines[0] == "class,IoU,IoU_seam,precision,recall" and len(lines) == 22


def test_cli_out_dir_holds_log_config_and_metrics(data, tmp_path):
    """Bug 9: with out_dir=X, X is the run folder (no outputs/... folder), the JSON defaults inside it, config.yaml
    records the settings used, and a failing run leaves its traceback in X/evaluate.log."""
    root, ids, gt_dir, npy_dir, _ = data
    shutil.copy(root / "list.txt", tmp_path / "val.txt")
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "wsss.evaluate", f"pred_dir={npy_dir}", f"gt_dir={gt_dir}",
           f"list={tmp_path / 'val.txt'}", "type=npy", "curve=true", "curve_thresholds=auto", f"out_dir={out}",
           "workers=1", "progress=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "outputs").exists()
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "evaluate.log").is_file()
    res = json.loads((out / "metrics.json").read_text())
    assert res["split"] == "val" and res["tool"] == "evaluate" and "val/mIoU" in res and "val/IoU" in res
    assert proc.stdout.strip().splitlines()[-1] == f"val/mIoU={res['val/mIoU']:.4f}"
    assert f"val/mIoU={res['val/mIoU']:.4f}" in (out / "evaluate.log").read_text()  # the report is logged too
    from omegaconf import OmegaConf

    ran = OmegaConf.load(out / "config.yaml")
    assert len(ran.curve_thresholds) == 101 and ran.out == str(out / "metrics.json")

    bad = tmp_path / "bad"
    cmd = [c.replace(f"out_dir={out}", f"out_dir={bad}").replace(f"pred_dir={npy_dir}", f"pred_dir={tmp_path / 'no'}")
           for c in cmd]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    logged = (bad / "evaluate.log").read_text()
    assert "Traceback" in logged and "pred_dir" in logged and "is not a directory" in logged


def edge_scores(root: Path, num=4):
    """Foreground scores 0.9, background scores spread over 0..0.6: every threshold >= 0.6 is perfect."""
    rng = np.random.default_rng(3)
    ids = [f"e{i}" for i in range(num)]
    for name in ids:
        gt = np.zeros((12, 16), np.uint8)
        gt[3:9, 4:12] = 1
        score = np.where(gt == 1, 0.9, rng.uniform(0.0, 0.6, gt.shape)).astype(np.float32)
        write_label_png(root / "gt" / f"{name}.png", gt)
        save_score_dict(root / "s" / f"{name}.npy", {0: score})
    (root / "val.txt").write_text("\n".join(ids) + "\n")


def test_curve_warns_at_the_edge_and_auto_extends_the_range(tmp_path, capsys):
    """Bug 12: a best threshold at the edge of SEAM's 0.00..0.59 is warned about; curve_thresholds=auto
    (0.00..1.00, one pass) finds the optimum beyond it."""
    edge_scores(tmp_path)
    args = dict(pred_dir=str(tmp_path / "s"), gt_dir=str(tmp_path / "gt"), list=str(tmp_path / "val.txt"),
                type="npy", curve=True, dataset={"num_classes": 2, "class_names": ["background", "a"]})
    res = run(_cfg(**args, out=str(tmp_path / "seam.json")))
    printed = capsys.readouterr().out
    assert res["curve"]["best"]["threshold"] == 0.59 and res["mIoU"] < 1
    assert "WARNING: the best background threshold 0.59 lies at the edge of the range 0..0.59" in printed
    assert "curve_thresholds=auto" in printed
    assert "edge" in json.loads((tmp_path / "seam.json").read_text())["details"]["curve"]["warning"]
    res = run(_cfg(**{**args, "curve_thresholds": "auto"}, out=str(tmp_path / "auto.json")))
    printed = capsys.readouterr().out
    assert len(res["curve"]["thresholds"]) == 101 and res["curve"]["thresholds"][-1] == 1.0
    assert res["curve"]["best"]["threshold"] == pytest.approx(0.6, abs=0.011) and res["mIoU"] == 1.0
    assert "WARNING" not in printed and res["curve"]["warning"] is None


def test_matches_numbers_from_seams_own_script():
    """tests/fixtures/evaluate: outputs of the unmodified SEAM evaluation.py (see its README)."""
    fx = REPO / "tests" / "fixtures" / "evaluate"
    expected = json.loads((fx / "seam_expected.json").read_text())
    ids = (fx / "list.txt").read_text().split()
    res = evaluate_dir(fx / "pred", fx / "gt", ids, "png", N, NAMES)
    assert abs(100 * res["mIoU_seam"] - expected["png"]["mIoU"]) < 1e-4  # percent: 1e-6 as a fraction
    for name in NAMES:
        assert abs(100 * res["IoU_seam"][name] - expected["png"][name]) < 1e-4
    ts = [e["threshold"] for e in expected["npy_curve"]]
    res = evaluate_dir(fx / "scores", fx / "gt", ids, "npy", N, NAMES, curve_thresholds=ts)
    np.testing.assert_allclose(100 * np.asarray(res["curve"]["mIoU_seam"]),
                               [e["mIoU"] for e in expected["npy_curve"]], atol=1e-4, rtol=0)
    np.testing.assert_allclose(100 * np.asarray(res["curve"]["IoU_seam"]),
                               [[e[n] for n in NAMES] for e in expected["npy_curve"]], atol=1e-4, rtol=0)


def test_wandb_offline_logging(data, tmp_path, monkeypatch):
    """logger=wandb: curve, per-class table and overlay grid go to an offline W&B run."""
    pytest.importorskip("wandb")
    root, ids, gt_dir, npy_dir, _ = data
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = {"wandb": {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "wsss-test",
                        "save_dir": str(tmp_path), "offline": True}}
    res = run(_cfg(pred_dir=str(npy_dir), gt_dir=str(gt_dir), list=str(root / "list.txt"), type="npy",
                   curve=True, curve_thresholds=[0.1, 0.2, 0.3], out=str(tmp_path / "m.json"),
                   logger=logger, overlay_count=3))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert res["curve"]["thresholds"] == [0.1, 0.2, 0.3]


def test_overlay_examples_shape(data):
    from wsss.evaluation.dashboard import overlay_examples

    root, ids, gt_dir, npy_dir, _ = data
    res = evaluate_dir(npy_dir, gt_dir, ids, "npy", N, NAMES, threshold=0.2)
    grid = overlay_examples(res, ids, None, 2)
    assert grid.dtype == np.uint8 and grid.shape[0] == 2 * 160 + 4 and grid.shape[2] == 3


# ----- calib_list: a threshold chosen without the reported split's GT ------------------------------------------
def calib_setup(root: Path):
    ids, gt_dir, npy_dir, _ = make_dataset(root, num=13, seed=3)
    (root / "calib.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "report.txt").write_text("\n".join(ids[6:]) + "\n")
    return ids, gt_dir, npy_dir


def calib_cfg(root, gt_dir, npy_dir, out, **kw):
    return _cfg(pred_dir=str(npy_dir), gt_dir=str(gt_dir), list=str(root / "report.txt"), type="npy", curve=True,
                curve_thresholds="auto", calib_list=str(root / "calib.txt"), out=str(out), **kw)


def test_calibrated_threshold_is_the_calib_lists_best_and_the_oracle_stands_beside_it(tmp_path):
    ids, gt_dir, npy_dir = calib_setup(tmp_path)
    res = run(calib_cfg(tmp_path, gt_dir, npy_dir, tmp_path / "m.json"))
    grid = [round(0.01 * i, 2) for i in range(101)]
    on_calib = evaluate_dir(npy_dir, gt_dir, ids[:6], "npy", N, NAMES, curve_thresholds=grid)
    on_report = evaluate_dir(npy_dir, gt_dir, ids[6:], "npy", N, NAMES, curve_thresholds=grid)
    t = on_calib["curve"]["best"]["threshold"]
    at_t = evaluate_dir(npy_dir, gt_dir, ids[6:], "npy", N, NAMES, threshold=t)
    assert res["calibrated"]["threshold"] == t and res["threshold"] == t
    assert res["calibrated"]["mIoU_seam"] == pytest.approx(at_t["mIoU_seam"], abs=1e-12)
    assert res["oracle"]["threshold"] == on_report["curve"]["best"]["threshold"]
    assert res["oracle"]["mIoU_seam"] == pytest.approx(on_report["curve"]["best"]["mIoU_seam"], abs=1e-12)
    assert res["oracle"]["mIoU_seam"] >= res["calibrated"]["mIoU_seam"]
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["calibrated"]["calib_list"] == str(tmp_path / "calib.txt")
    assert set(saved["calibrated"]) >= {"threshold", "mIoU_seam", "mIoU", "calib_list"}
    assert set(saved["oracle"]) == {"threshold", "mIoU_seam", "mIoU"}
    assert saved["protocol"]["background"]["chosen"] == "calibrated"
    assert saved["report/mIoU_seam"] == pytest.approx(at_t["mIoU_seam"], abs=1e-12)
    assert (tmp_path / "m_curve.png").stat().st_size > 0


def test_calibrated_threshold_does_not_see_the_reported_splits_gt(tmp_path):
    ids, gt_dir, npy_dir = calib_setup(tmp_path)
    before = run(calib_cfg(tmp_path, gt_dir, npy_dir, tmp_path / "a.json"))
    rng = np.random.default_rng(7)
    for name in ids[6:]:  # relabel the reported images' GT entirely
        shape = np.asarray(Image.open(gt_dir / f"{name}.png")).shape
        write_label_png(gt_dir / f"{name}.png", rng.integers(0, N, size=shape).astype(np.uint8))
    after = run(calib_cfg(tmp_path, gt_dir, npy_dir, tmp_path / "b.json"))
    assert after["calibrated"]["threshold"] == before["calibrated"]["threshold"]
    assert after["mIoU_seam"] != before["mIoU_seam"]  # the reported number did use the new GT
    assert after["oracle"]["threshold"] != before["oracle"]["threshold"]  # and the oracle followed it


def test_calibration_refuses_shared_ids_and_conflicting_settings(tmp_path):
    ids, gt_dir, npy_dir = calib_setup(tmp_path)
    (tmp_path / "calib.txt").write_text("\n".join(ids[:6] + ids[7:9]) + "\n")
    with pytest.raises(ValueError, match=f"shares 2 ids with list=.*: {ids[7]}, {ids[8]}"):
        run(calib_cfg(tmp_path, gt_dir, npy_dir, tmp_path / "m.json"))
    (tmp_path / "calib.txt").write_text("\n".join(ids[:6]) + "\n")
    with pytest.raises(ValueError, match="drop threshold=0.3"):
        run(calib_cfg(tmp_path, gt_dir, npy_dir, tmp_path / "m.json", threshold=0.3))
    with pytest.raises(ValueError, match="needs type=npy and curve=true"):
        run(_cfg(pred_dir=str(npy_dir), gt_dir=str(gt_dir), list=str(tmp_path / "report.txt"), type="npy",
                 calib_list=str(tmp_path / "calib.txt"), threshold=None, out=str(tmp_path / "m.json")))


def test_cli_prints_calibrated_oracle_and_gap(tmp_path):
    ids, gt_dir, npy_dir = calib_setup(tmp_path)
    out = tmp_path / "res" / "m.json"
    proc = subprocess.run([sys.executable, "-m", "wsss.evaluate", f"pred_dir={npy_dir}", f"gt_dir={gt_dir}",
                           f"list={tmp_path / 'report.txt'}", "type=npy", "curve=true",
                           f"calib_list={tmp_path / 'calib.txt'}", f"out={out}", "progress=false",
                           f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    c, o = res["calibrated"], res["oracle"]
    assert f"calibrated background threshold {c['threshold']:g} (best on 6 images of calib.txt)" in proc.stdout
    assert f"oracle background threshold {o['threshold']:g}" in proc.stdout
    assert f"oracle - calibrated: {o['mIoU_seam'] - c['mIoU_seam']:+.4f} mIoU_seam" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"report/mIoU={c['mIoU']:.4f}"
    run = json.loads((tmp_path / "hydra" / "run.json").read_text())  # the run folder, beside config.yaml
    assert run["tool"] == "evaluate" and run["status"] == "done" and run["details"]["threshold_chosen"] == "calibrated"


def test_overlays_rank_images_by_their_own_miou(data, tmp_path):
    """overlays=N: per_image_iou.csv worst first, each value the image's mIoU computed by hand; N worst and N
    best panels (image, GT, score maps, prediction) on disk."""
    from wsss.evaluation.examples import image_miou
    from wsss.metrics.folders import predict_npy

    root, ids, gt_dir, npy_dir, _ = data
    run(_cfg(pred_dir=str(npy_dir), gt_dir=str(gt_dir), list=str(root / "list.txt"), type="npy", threshold=0.25,
             out=str(tmp_path / "m.json"), out_dir=str(tmp_path), overlays=2))
    rows = (tmp_path / "per_image_iou.csv").read_text().splitlines()
    assert rows[0] == "rank,id,mIoU" and len(rows) == len(ids) + 1
    values = [float(r.split(",")[2]) for r in rows[1:]]
    assert values == sorted(values)
    name = rows[1].split(",")[1]
    gt = np.asarray(Image.open(gt_dir / f"{name}.png"))
    pred = predict_npy(npy_dir / f"{name}.npy", gt, N, 0.25)
    keep = gt != 255
    ious = [np.sum((gt[keep] == c) & (pred[keep] == c)) / np.sum((gt[keep] == c) | (pred[keep] == c))
            for c in set(np.unique(gt[keep])) | set(np.unique(pred[keep]))]
    assert values[0] == pytest.approx(float(np.mean(ious)), abs=1e-6) == pytest.approx(image_miou(gt, pred), abs=1e-6)
    panels = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert panels == sorted([f"worst_01_{rows[1].split(',')[1]}.png", f"worst_02_{rows[2].split(',')[1]}.png",
                             f"best_01_{rows[-1].split(',')[1]}.png", f"best_02_{rows[-2].split(',')[1]}.png"])
    panel = Image.open(tmp_path / "overlays" / panels[0])
    assert panel.mode == "RGB" and panel.width > 3 * 150  # image, GT, at least one score map, prediction
