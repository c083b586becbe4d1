"""The one-pass curve must equal a dense per-threshold argmax (SEAM's rule) for every threshold."""
import numpy as np
import pytest

from wsss.metrics.curve import (ThresholdCurve, auto_thresholds, best_foreground, best_threshold_index,
                                curve_scores, default_thresholds, edge_warning, resolve_thresholds)

N = 21


def dense_prediction(scores, t, shape, n=N):
    """SEAM's tensor: channel 0 = t, channel k+1 = scores[k], absent = 0; argmax ties to lower."""
    tensor = np.zeros((n,) + shape, np.float32)
    for k, v in scores.items():
        tensor[k + 1] = v
    tensor[0] = t
    return tensor.argmax(axis=0)


def dense_confusion(pred, gt, n=N):
    keep = gt != 255
    return np.bincount(gt[keep].astype(np.int64) * n + pred[keep], minlength=n * n).reshape(n, n)


def tie_heavy_scores(rng, shape, keys):
    """Scores on the 0.01 grid (so many equal float32(t) exactly), some zeros and negatives."""
    out = {}
    for k in keys:
        v = rng.integers(-5, 70, size=shape) / 100.0
        out[k] = v.astype(np.float32)
    return out


def random_gt(rng, shape, n=N):
    gt = rng.integers(0, n, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    return gt


@pytest.mark.parametrize("keys", [[0], [3, 7], [0, 1, 2], list(range(20)), [19], []])
def test_best_foreground_matches_dense_argmax(keys):
    rng = np.random.default_rng(len(keys))
    shape = (13, 17)
    scores = tie_heavy_scores(rng, shape, keys)
    cls, score = best_foreground(scores, N, shape)
    # with a background plane below every score, the dense argmax is the best fg class
    dense = dense_prediction(scores, -1.0, shape)
    np.testing.assert_array_equal(cls, dense)
    full = np.zeros((N,) + shape, np.float32)
    for k, v in scores.items():
        full[k + 1] = v
    np.testing.assert_array_equal(score, full[1:].max(axis=0))


@pytest.mark.parametrize("thresholds", [
    default_thresholds(),
    [0.3, 0.1, 0.2, 0.1, -0.02, 0.0],        # unsorted, duplicated, negative
    [0.25],
    [float(np.float32(0.2)), 0.2, np.nextafter(0.2, 1.0)],  # values that collapse in float32
])
def test_curve_equals_per_threshold_argmax(thresholds):
    rng = np.random.default_rng(0)
    curve = ThresholdCurve(thresholds, N)
    images = []
    for i, keys in enumerate([[0], [3, 7], [0, 1, 2], list(range(20)), [], [5, 6]]):
        shape = (9 + i, 11)
        scores = tie_heavy_scores(rng, shape, keys)
        gt = random_gt(rng, shape)
        images.append((scores, gt, shape))
        curve.update(gt, *best_foreground(scores, N, shape))
    confs = curve.confusions()
    assert confs.shape == (len(thresholds), N, N)
    for j, t in enumerate(thresholds):
        ref = sum(dense_confusion(dense_prediction(s, t, shape), gt) for s, gt, shape in images)
        np.testing.assert_array_equal(confs[j], ref, err_msg=f"threshold {t}")


def test_tie_goes_to_background():
    gt = np.array([[1, 1, 0]], np.uint8)
    scores = {0: np.array([[0.2, 0.21, 0.19]], np.float32)}
    curve = ThresholdCurve([0.2], N)
    curve.update(gt, *best_foreground(scores, N))
    conf = curve.confusions()[0]
    assert conf[1, 0] == 1  # score == t -> background
    assert conf[1, 1] == 1  # score > t -> class 1
    assert conf[0, 0] == 1


def test_merge_and_shape_errors():
    a, b = ThresholdCurve([0.1, 0.2], N), ThresholdCurve([0.1, 0.2], N)
    gt = np.zeros((2, 2), np.uint8)
    a.update(gt, *best_foreground({0: np.full((2, 2), 0.15, np.float32)}, N))
    b.merge(a)
    np.testing.assert_array_equal(a.confusions(), b.confusions())
    with pytest.raises(ValueError):
        b.merge(ThresholdCurve([0.1], N))
    with pytest.raises(ValueError, match="differ in size"):
        a.update(np.zeros((3, 2), np.uint8), *best_foreground({0: np.zeros((2, 2), np.float32)}, N))
    with pytest.raises(ValueError, match="outside"):
        a.update(np.full((2, 2), 30, np.uint8), *best_foreground({0: np.zeros((2, 2), np.float32)}, N))
    with pytest.raises(ValueError):
        ThresholdCurve([], N)


def test_curve_scores_and_best():
    curve = ThresholdCurve([0.0, 0.5, 0.9], 3)
    gt = np.array([[0, 1, 2, 255]], np.uint8)
    scores = {0: np.array([[0.3, 0.7, 0.1, 0.9]], np.float32), 1: np.array([[0.1, 0.2, 0.6, 0.0]], np.float32)}
    curve.update(gt, *best_foreground(scores, 3))
    res = curve_scores(curve.confusions(), ["bg", "a", "b"])
    # t = 0.5: predictions bg, a, b -> perfect
    assert res[1]["mIoU_seam"] == pytest.approx(1.0, abs=1e-9)
    # t = 0.9: everything bg -> IoU bg = 1/3, others 0
    assert res[2]["mIoU_seam"] == pytest.approx((1 / 3) / 3, abs=1e-9)
    assert best_threshold_index([r["mIoU_seam"] for r in res]) == 1
    assert best_threshold_index([0.5, 0.7, 0.7]) == 1


@pytest.mark.parametrize("thresholds", [
    default_thresholds(),
    [0.0, -0.0, 0.2, float(np.nextafter(np.float32(0.2), np.float32(1))), 0.2000001, -1e-30, 1e30],
    list(np.linspace(-0.5, 1.5, 1001)),               # many thresholds per lookup bucket
    [0.5],
])
def test_bins_equal_searchsorted(thresholds):
    rng = np.random.default_rng(1)
    curve = ThresholdCurve(thresholds, N)
    t32 = np.sort(np.asarray(thresholds, np.float32))
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1e-38, np.float32(0.2),
                        np.nextafter(np.float32(0.2), np.float32(0)), np.nextafter(np.float32(0.2), np.float32(1))],
                       np.float32)
    scores = np.concatenate([special, rng.normal(0.3, 0.5, 5000).astype(np.float32),
                             (rng.integers(-60, 160, 5000) / 100).astype(np.float32),
                             t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))])
    np.testing.assert_array_equal(curve.bins(scores), np.searchsorted(t32, scores, side="left"))


def test_named_ranges_and_edge_warning():
    """Bug 12: 0.58 of SEAM's 0.00..0.59 (what the synthetic set gives) is at the edge; ``auto`` is 0.00..1.00."""
    assert resolve_thresholds("seam") == default_thresholds() and len(default_thresholds()) == 60
    assert resolve_thresholds("auto") == auto_thresholds() and auto_thresholds()[::50] == [0.0, 0.5, 1.0]
    assert resolve_thresholds([0.3, 0.1]) == [0.3, 0.1]
    with pytest.raises(ValueError, match="seam.*auto"):
        resolve_thresholds("wide")
    seam = default_thresholds()
    msg = edge_warning(seam, seam.index(0.58))
    assert "0.58 lies at the edge of the range 0..0.59" in msg and "above 0.59" in msg
    assert "curve_thresholds=auto" in msg
    assert edge_warning(seam, seam.index(0.3)) is None and edge_warning(seam, seam.index(0.56)) is None
    assert "below 0" in edge_warning(seam, 0)
    auto = auto_thresholds()
    assert edge_warning(auto, auto.index(0.58)) is None
    assert "reaching further" in edge_warning(auto, len(auto) - 1)
    assert edge_warning([0.1, 0.2], 1) is None  # too few thresholds to speak of an edge

