"""The shared training loop: NaN checks, schedule, memory format, state/restore, device hold."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cellblock.core import device_lock
from cellblock.core.errors import EvaluationError
from cellblock.data import Augment, Dataset
from cellblock.evaluators.loop import NAN_CHECK_EVERY, TrainLoop, lr_at
from cellblock.evaluators.training import TrainConfig


def tiny_data(n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Dataset("tiny", x, y, x[:8], y[:8], x[:8], y[:8], (1, 8, 8), 10,
                   Augment(pad=1, flip=True))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(256, 10))


class Recorder:
    """Steps that record what the loop hands them and return a chosen loss."""

    def __init__(self, loop: TrainLoop, nan_at: int | None = None) -> None:
        self.loop, self.nan_at = loop, nan_at
        self.seen: list[tuple[int, float, torch.Tensor]] = []

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.loop.step, self.loop.optimizer.param_groups[0]["lr"], xb))
        bad = self.nan_at is not None and self.loop.step >= self.nan_at
        return torch.tensor(float("nan") if bad else 1.0)

    def new_epoch(self) -> None:
        pass


def test_nan_is_caught_within_nan_check_every_steps():
    """One step per image: the epoch is longer than the check window, so the NaN of step 3
    stops training after the first window, not at the end of the epoch."""
    loop = TrainLoop(tiny_model(), tiny_data(), TrainConfig(epochs=1, batch_size=2),
                     torch.device("cpu"))
    steps = Recorder(loop, nan_at=2)
    assert loop.steps_per_epoch > NAN_CHECK_EVERY
    with pytest.raises(EvaluationError, match="loss became NaN at epoch 1 step 3;"):
        loop.run(steps)
    assert len(steps.seen) == NAN_CHECK_EVERY


def test_schedule_epochs_and_callback():
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.2, warmup_epochs=1.0, max_steps=10)
    loop = TrainLoop(tiny_model(), tiny_data(), cfg, torch.device("cpu"))
    steps, ends = Recorder(loop), []
    loop.run(steps,
             on_epoch_end=lambda lp: ends.append((lp.epoch, lp.step, lp.final_loss, lp.last_epoch)))
    assert [s for s, _, _ in steps.seen] == list(range(10))  # the budget cuts epoch 3
    assert [lr for _, lr, _ in steps.seen] == [lr_at(s, 10, 4, 0.2) for s in range(10)]
    assert ends == [(1, 4, 1.0, False), (2, 8, 1.0, False), (3, 10, 1.0, True)]
    assert loop.train_s > 0 and all(xb.shape == (16, 1, 8, 8) for _, _, xb in steps.seen)


def test_state_restore_continues_the_same_batches():
    cfg = TrainConfig(epochs=2, batch_size=16, seed=7)
    straight = TrainLoop(tiny_model(), tiny_data(), cfg, torch.device("cpu"))
    whole, states = Recorder(straight), []
    straight.run(whole, on_epoch_end=lambda lp: states.append(lp.state()))
    resumed = TrainLoop(tiny_model(), tiny_data(), cfg, torch.device("cpu"))
    resumed.restore(states[0])
    rest = Recorder(resumed)
    resumed.run(rest)
    assert (resumed.epoch, resumed.step, resumed.start_step) == (2, 8, 4)
    assert len(rest.seen) == 4
    for (s1, lr1, x1), (s2, lr2, x2) in zip(whole.seen[4:], rest.seen, strict=True):
        assert (s1, lr1) == (s2, lr2) and torch.equal(x1, x2)  # same augmentation draws


@pytest.mark.parametrize("weights", [True, False])
def test_channels_last_batches_with_or_without_channels_last_weights(weights):
    model = tiny_model()
    loop = TrainLoop(model, tiny_data(), TrainConfig(epochs=1, batch_size=32, channels_last=True),
                     torch.device("cpu"), channels_last_weights=weights)
    steps = Recorder(loop)
    loop.run(steps)
    assert all(xb.is_contiguous(memory_format=torch.channels_last) for _, _, xb in steps.seen)
    conv = model[1].weight  # 4 input channels: the two formats differ
    assert conv.is_contiguous(memory_format=torch.channels_last) is weights
    assert conv.is_contiguous() is not weights


def test_the_hold_is_polled_before_every_step():
    class Hold:
        polls = 0

        def poll(self) -> None:
            self.polls += 1

    loop = TrainLoop(tiny_model(), tiny_data(), TrainConfig(epochs=2, batch_size=16),
                     torch.device("cpu"))
    hold = Hold()
    loop.run(Recorder(loop), hold)
    assert hold.polls == loop.step == 8


def test_supernet_training_holds_the_device(monkeypatch):
    """Supernet training runs in the shared loop: it holds its device against latency
    measurements like a stand-alone training."""
    from cellblock.search_spaces import SearchSpace
    from cellblock.supernet.model import Supernet
    from cellblock.supernet.train import SupernetSteps, train_supernet

    held, step = [], SupernetSteps.step

    def spy(self, xb, yb):
        held.append(device_lock.device_key("cpu") in device_lock._HOLDS)
        return step(self, xb, yb)

    monkeypatch.setattr(SupernetSteps, "step", spy)
    space = SearchSpace("blocks", input_shape=(1, 8, 8), num_classes=10, stages=1, widths=[[4]],
                        strides=[1], stem_width=4, depth=[1, 1], block_types=["basic"], kernels=[3],
                        expansions=[1], attentions=["none"])
    out = train_supernet(Supernet.create(space), tiny_data(), TrainConfig(epochs=1, batch_size=16))
    assert held == [True] * 4 and out["steps"] == 4 and math.isfinite(out["final_loss"])
    assert device_lock.device_key("cpu") not in device_lock._HOLDS
