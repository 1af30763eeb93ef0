"""Issue 30, from search to deployment: ONNX after training passes its own check, and the
input normalisation travels with every exported format."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

import cellblock
from cellblock.cli import main
from cellblock.data import CUSTOM_TEST_FRACTION, CUSTOM_VAL_FRACTION, stratified_split
from cellblock.export import export_items
from cellblock.export.verify import ExportItem, fresh_weights
from cellblock.search_spaces.api import SearchSpace

BASIC = {"stages": 2, "widths": [[8], [12]], "strides": [1, 2], "depth": [1, 1],
         "block_types": ["basic"], "attentions": ["none"], "kernels": [3], "stem_width": 8}


def test_onnx_check_counts_initializers_the_exporter_merged(tmp_path):
    """After training, a basic block's bn2.bias can equal its projection's BN bias bit for bit;
    the ONNX exporter then keeps one initializer, and the round trip must still pass."""
    space = SearchSpace("blocks", **BASIC)
    arch = space.sample(np.random.default_rng(0))
    model = space.build(arch)
    fresh_weights(model, space.input_shape, 0)  # distinct random BN tensors everywhere
    state = model.state_dict()
    bias, shortcut = "stages.1.0.bn2.bias", "stages.1.0.downsample.1.bias"
    assert shortcut in state  # stage 2 changes width and stride: a projection shortcut
    state[bias] = state[shortcut].clone()  # what training produced in the issue
    item = ExportItem("knee", arch, space, 0, state=state, state_source="trained")
    report = export_items([item], tmp_path / "out", ["onnx"])
    onnx_result = report["exports"][0]["formats"]["onnx"]
    assert report["ok"] and onnx_result["params_ok"] and onnx_result["initializers_ok"]
    assert onnx_result["merged_initializers"] in ({bias: shortcut}, {shortcut: bias})
    assert onnx_result["params"] == onnx_result["params_expected"] == sum(
        v.numel() for v in model.parameters())


def _uint8_digits(path):
    """scikit-learn's digits as a user's raw data: uint8 0..255 images (N, H, W)."""
    from cellblock.data.loaders import digits_arrays

    images, target = digits_arrays()
    x = np.clip(np.round(images * (255 / 16)), 0, 255).astype(np.uint8)
    np.savez(path, x=x, y=target.astype(np.int64))
    return x, target.astype(np.int64)


def _accuracy(logits, y):
    return float((np.asarray(logits).argmax(1) == y).mean())


@pytest.mark.slow
def test_raw_data_fed_to_every_format_gets_the_trained_accuracy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _uint8_digits(tmp_path / "mine.npz")
    cellblock.search(space="blocks", space_args=dict(BASIC, stages=1, widths=[[8]], strides=[1]),
                     dataset="mine.npz", trials=1, epochs=1, objectives="accuracy,macs",
                     device="cpu", out="run", seed=0, strategy="random")
    assert main(["train", "run", "--trial", "0", "--epochs", "15", "--device", "cpu",
                 "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "run/train/trial_0/metrics.json").read_text())
    assert main(["export", "run", "--trial", "0", "--out", "exp"]) == 0
    folder = tmp_path / "exp" / "trial_0"
    prep = json.loads((folder / "arch.json").read_text())["preprocessing"]
    assert prep["pixel_scale"] == 255.0 and prep["input_shape"] == [1, 8, 8]
    assert prep["value_range"] == [0.0, 1.0] and len(prep["mean"]) == len(prep["std"]) == 1
    train_idx, val_idx, test_idx = stratified_split(y, CUSTOM_VAL_FRACTION, CUSTOM_TEST_FRACTION, 0,
                                                     CUSTOM_VAL_FRACTION)
    assert prep["mean"][0] == pytest.approx(float((x[train_idx] / 255.0).mean()), rel=1e-4)
    raw_test, y_test = x[test_idx], y[test_idx]  # uint8 (N, 8, 8), as the user has them
    want = metrics["test_accuracy"]
    assert want > 0.5  # trained: far above the 10% of chance (and of unnormalised inputs)

    spec = importlib.util.spec_from_file_location("exported_model", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.PREPROCESSING == prep
    net = mod.build(str(folder / "weights.pt"))
    batch = mod.preprocess(raw_test)  # uint8 (N, H, W) -> float (N, 1, H, W) in 0..1
    with torch.no_grad():
        got = {"pytorch": _accuracy(net(batch), y_test)}
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
        got["torchscript"] = _accuracy(scripted(batch), y_test)
    if "onnxruntime" in sys.modules or importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        got["onnx"] = _accuracy(sess.run(None, {"input": batch.numpy()})[0], y_test)
    for fmt, acc in got.items():  # at most one image of float rounding apart
        assert abs(acc - want) <= 1.0 / len(y_test) + 1e-12, (fmt, acc, want)
    # an export's arch.json exported again keeps its preprocessing
    assert main(
        ["export", "--arch", str(folder / "arch.json"), "--format", "json", "--out", "again"]) == 0
    again = next((tmp_path / "again").glob("arch_*/arch.json"))
    assert json.loads(again.read_text())["preprocessing"] == prep
