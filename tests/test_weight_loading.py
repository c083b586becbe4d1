"""backbone.weights: every accepted file format loads strictly; every bad file gets a clear error."""
from __future__ import annotations

import logging
import pickle

import pytest
import torch
import torchvision

from wsss.checkpoints.imagenet import WeightsFormatError, load_backbone_weights
from wsss.models.backbones import build_backbone


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_torchvision_resnet50_loads_as_is(tmp_path):
    tv = torchvision.models.resnet50()
    path = _save(tv.state_dict(), tmp_path / "resnet50-19c8e357.pth")
    net = build_backbone("resnet50", weights=path, output_stride=8)
    assert torch.equal(net.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)
    assert torch.equal(net.bn1.running_var, tv.bn1.running_var)
    report = load_backbone_weights(net, path)
    assert set(report.ignored) == {"fc.weight", "fc.bias"} and not report.missing and not report.unexpected


def test_resnet38d_pth_plain_and_inside_a_trained_checkpoint(tmp_path, caplog):
    src = build_backbone("resnet38d")
    with torch.no_grad():
        src.b5_1.conv_branch2b1.weight.normal_()
        src.bn7.running_var.uniform_(1, 2)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) == 191  # the 1-stage-wseg / ws-fcn converted file
    path = _save(sd, tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth")
    net = build_backbone("resnet38d", weights=path)
    assert torch.equal(net.b5_1.conv_branch2b1.weight, src.b5_1.conv_branch2b1.weight)
    assert torch.equal(net.bn7.running_var, src.bn7.running_var)

    # an RTC-style trained model: DataParallel prefix, extra heads -> loads, extras reported by name
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}}
    wrapped["state_dict"]["module.fc8.weight"] = torch.zeros(21, 4096, 1, 1)
    path2 = _save(wrapped, tmp_path / "rtc_like.pth")
    net2 = build_backbone("resnet38d")
    with caplog.at_level(logging.WARNING):
        report = load_backbone_weights(net2, path2)
    assert report.unexpected == ["fc8.weight"] and "fc8.weight" in caplog.text
    assert torch.equal(net2.bn7.running_var, src.bn7.running_var)


def _cuhk_names(sd):
    """wsss deep-stem names -> EMANet resnet-101-cuhk / PyTorch-Encoding names (conv1.N, bn1, layerK)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("conv1.conv1."):
            k = k[len("conv1."):]
        elif k.startswith("conv1.bn1."):
            k = k[len("conv1."):]
        elif k.startswith("res"):
            k = f"layer{int(k[3]) - 1}" + k[4:]
        out[k] = v
    return out


def test_deepstem_cuhk_and_spml_layouts(tmp_path):
    # the 50-layer variant keeps the test fast; the renaming does not depend on the depth
    name = "resnet50_deepstem"
    src = build_backbone(name)
    with torch.no_grad():
        src.conv1.bn1.running_mean.normal_()
        src.res4[1].conv2.weight.normal_()
    cuhk = _cuhk_names(src.state_dict())
    assert "conv1.0.weight" in cuhk and "bn1.weight" in cuhk and "layer3.1.conv2.weight" in cuhk
    cuhk["fc.weight"] = torch.zeros(1000, 2048)
    net = build_backbone(name, weights=_save(cuhk, tmp_path / "resnet-cuhk.pth"))
    assert torch.equal(net.conv1.bn1.running_mean, src.conv1.bn1.running_mean)
    assert torch.equal(net.res4[1].conv2.weight, src.res4[1].conv2.weight)

    # an SPML release: the embedding model's backbone under resnet_backbone.
    release = {"embedding_model": {"resnet_backbone." + k: v for k, v in src.state_dict().items()},
               "prediction_model": {"semantic_classifier.4.weight": torch.zeros(21, 128, 1, 1)}}
    release["embedding_model"]["aspp.aspp_1.0.weight"] = torch.zeros(64, 2048, 3, 3)
    net = build_backbone(name)
    report = load_backbone_weights(net, _save(release, tmp_path / "model-3999.pth"))
    assert not report.missing and "aspp.aspp_1.0.weight" in " ".join(report.unexpected)
    assert torch.equal(net.res4[1].conv2.weight, src.res4[1].conv2.weight)


def test_missing_key_is_named_and_strict_false_lets_it_through(tmp_path):
    sd = torchvision.models.resnet18().state_dict()
    del sd["layer2.1.bn2.running_var"]
    path = _save(sd, tmp_path / "r18.pth")
    with pytest.raises(WeightsFormatError, match=r"r18\.pth.*\n(.|\n)*layer2\.1\.bn2\.running_var(.|\n)*strict=false"):
        build_backbone("resnet18", weights=path)
    net = build_backbone("resnet18", weights=path, strict=False)
    assert torch.equal(net.layer2[1].bn2.running_mean, sd["layer2.1.bn2.running_mean"])


def test_shape_mismatch_is_named(tmp_path):
    sd = torchvision.models.resnet18().state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(WeightsFormatError, match=r"layer1\.0\.conv1\.weight file \(64, 64, 1, 1\) vs backbone"):
        build_backbone("resnet18", weights=_save(sd, tmp_path / "bad.pth"))
    # strict=False skips the mismatched tensor, keeps the random init
    build_backbone("resnet18", weights=str(tmp_path / "bad.pth"), strict=False)


def test_other_architecture_is_named(tmp_path):
    path = _save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18-5c106cde.pth")
    with pytest.raises(WeightsFormatError, match=r"resnet18-5c106cde\.pth.*torchvision ResNet-18"):
        build_backbone("resnet38d", weights=path)
    with pytest.raises(WeightsFormatError, match=r"torchvision ResNet-18"):
        build_backbone("resnet50_deepstem", weights=path)


def test_truncated_unknown_and_unsafe_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsFormatError, match=r"cut\.pth.*(truncated|corrupt)"):
        build_backbone("resnet18", weights=str(cut))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(WeightsFormatError, match=r"notes\.txt: unknown weights format"):
        build_backbone("resnet18", weights=str(txt))
    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as f:
        pickle.dump({"conv1.weight": object()}, f, protocol=2)
    with pytest.raises(WeightsFormatError, match=r"unsafe\.pth.*weights_only"):
        build_backbone("resnet18", weights=str(unsafe))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_backbone("resnet18", weights=str(tmp_path / "absent.pth"))
