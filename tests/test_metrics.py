"""The confusion-matrix metric against a matrix computed by hand."""
import numpy as np
import pytest
import torch

from wsss.metrics import SegmentationIoU, confusion_matrix, scores_from_confusion


def test_hand_computed_example_both_conventions():
    # 3 classes; GT row-major 2x4 with one ignored pixel; class 2 never predicted nor in GT? -> no: see below
    gt = torch.tensor([[0, 0, 1, 1], [1, 255, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 0]])
    conf = confusion_matrix(pred, gt, 4)
    # by hand: GT0 at (0,0),(0,1),(1,2),(1,3) -> pred 0,1,0,0 ; GT1 at (0,2),(0,3),(1,0) -> pred 1,1,0
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 0] = 3, 1, 2, 1
    assert (conf.numpy() == expected).all()  # the ignored pixel (pred 2) is not counted
    res = scores_from_confusion(conf.numpy(), ["bg", "a", "b", "c"])
    iou0 = 3 / (4 + 4 - 3)
    iou1 = 2 / (3 + 3 - 2)
    assert res["IoU"]["bg"] == pytest.approx(iou0)
    assert res["IoU"]["a"] == pytest.approx(iou1)
    assert res["IoU"]["b"] is None and res["IoU"]["c"] is None
    assert res["mIoU"] == pytest.approx((iou0 + iou1) / 2)
    # SEAM: TP / (T + P - TP + 1e-10) for all classes, absent = 0, mean over all 4
    seam = [3 / (5 + 1e-10), 2 / (4 + 1e-10), 0.0, 0.0]
    assert res["mIoU_seam"] == pytest.approx(np.mean(seam), abs=1e-12)
    assert res["precision"]["a"] == pytest.approx(2 / 3)
    assert res["recall"]["bg"] == pytest.approx(3 / 4)


def test_metric_accumulates_batches_and_rejects_bad_ids():
    metric = SegmentationIoU(3)
    rng = np.random.default_rng(0)
    total = np.zeros((3, 3), dtype=np.int64)
    for _ in range(3):
        gt = rng.integers(0, 3, size=(2, 5, 5))
        gt[0, 0, 0] = 255
        pred = rng.integers(0, 3, size=(2, 5, 5))
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        for g, p in zip(gt.ravel(), pred.ravel()):
            if g != 255:
                total[g, p] += 1
    out = metric.compute()
    assert np.array_equal(np.asarray(out["confmat"]), total)
    with pytest.raises(ValueError, match="outside 0..2"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
