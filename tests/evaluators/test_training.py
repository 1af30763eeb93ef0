"""Training evaluator: accuracy on digits, determinism, NaN detection, config checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.data import Dataset, load_dataset
from cellblock.evaluators.loop import lr_at
from cellblock.evaluators.training import TrainConfig, evaluate_accuracy, train_and_evaluate


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a small shared CPU, 2 spinning OpenMP threads can be 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


class Exploding(nn.Module):
    """Multiplies its logits by inf after the first call: the loss becomes NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scale = torch.where(self.calls > 3, torch.tensor(float("inf")), torch.tensor(1.0))
        return self.net(x) * scale


def test_small_cnn_learns_digits(digits: Dataset) -> None:
    res = train_and_evaluate(small_cnn(), digits, TrainConfig(epochs=6, seed=0))
    assert res["accuracy"] > 0.9
    assert set(res) >= {"accuracy", "train_s", "images_per_s", "epochs", "final_loss"}
    assert res["epochs"] == 6 and res["train_s"] > 0 and res["images_per_s"] > 0
    assert math.isfinite(res["final_loss"]) and res["final_loss"] < 1.5


def test_same_seed_same_result_and_seed_matters(digits: Dataset) -> None:
    cfg = TrainConfig(epochs=1, seed=3)
    a = train_and_evaluate(small_cnn(), digits, cfg)
    b = train_and_evaluate(small_cnn(), digits, cfg)
    assert a["accuracy"] == b["accuracy"] and a["final_loss"] == b["final_loss"]
    c = train_and_evaluate(small_cnn(), digits, TrainConfig(epochs=1, seed=4))
    assert c["final_loss"] != a["final_loss"]


def test_max_steps_caps_training(digits: Dataset) -> None:
    res = train_and_evaluate(small_cnn(), digits, TrainConfig(epochs=5, max_steps=7, batch_size=32))
    assert res["steps"] == 7 and res["epochs"] == 1


def test_nan_loss_raises(digits: Dataset) -> None:
    with pytest.raises(EvaluationError, match=r"loss became NaN at epoch 1 step 4;"):
        train_and_evaluate(Exploding(), digits, TrainConfig(epochs=2))


def test_huge_lr_raises(digits: Dataset) -> None:
    with pytest.raises(EvaluationError, match="loss became NaN"):
        train_and_evaluate(small_cnn(), digits, TrainConfig(epochs=3, lr=1e12, label_smoothing=0.0))


def test_validation_only_and_restores_mode(digits: Dataset) -> None:
    model = small_cnn()
    acc = evaluate_accuracy(model, digits.x_val, digits.y_val, batch_size=100)
    assert 0.0 <= acc <= 1.0 and model.training
    # Perfect "model": returns one-hot of the true labels via a lookup on the inputs.
    table = {x.numpy().tobytes(): int(y) for x, y in zip(digits.x_val, digits.y_val, strict=True)}

    class Oracle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            labels = torch.tensor([table[r.numpy().tobytes()] for r in x])
            return nn.functional.one_hot(labels, 10).float()

    assert evaluate_accuracy(Oracle(), digits.x_val, digits.y_val, batch_size=64) == 1.0


def test_lr_schedule_shape() -> None:
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(99, 100, 0, 1.0) < 0.01


@pytest.mark.parametrize(
    "bad",
    [{"epochs": 0}, {"batch_size": 1}, {"lr": -1.0}, {"momentum": 1.0}, {"max_steps": 0}],
)
def test_bad_config_raises(digits: Dataset, bad: dict) -> None:
    with pytest.raises(ConfigError, match="invalid"):
        train_and_evaluate(small_cnn(), digits, TrainConfig(**bad))


def test_unavailable_device_raises(digits: Dataset) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train_and_evaluate(small_cnn(), digits, TrainConfig(device="cuda"))


def test_resume_from_epoch_state_matches_uninterrupted(digits: Dataset) -> None:
    cfg = TrainConfig(epochs=2, seed=5, max_steps=None)
    straight = small_cnn()
    full = train_and_evaluate(straight, digits, cfg)
    states: list[dict] = []
    first = small_cnn()
    train_and_evaluate(first, digits, cfg, on_epoch_end=lambda s: states.append(copy.deepcopy(s)))
    assert [s["epoch"] for s in states] == [1, 2]
    resumed = small_cnn()  # fresh weights: everything must come from the state
    out = train_and_evaluate(resumed, digits, cfg, resume=states[0])
    assert out["final_loss"] == full["final_loss"] and out["accuracy"] == full["accuracy"]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert out["steps"] == full["steps"] and out["images_per_s"] > 0
