"""Issue 30: the supernet prior's reference scoring (minutes on a small CPU) shows progress."""

from __future__ import annotations

import itertools

import torch

import cellblock.supernet.evaluator as ev
from cellblock.data import load_dataset
from cellblock.search_spaces.api import SearchSpace
from cellblock.supernet.model import Supernet

SPACE = dict(stages=1, widths=[[4, 8, 12]], strides=[1], stem_width=4, depth=[1, 2],
             block_types=["basic"], kernels=[3, 5], attentions=["none"])


def test_fused_reference_reports_start_progress_and_end(monkeypatch):
    monkeypatch.setattr(ev, "REFERENCE_SAMPLES", 6)
    data = load_dataset("digits")
    space = SearchSpace("blocks", **SPACE, input_shape=data.input_shape,
                        num_classes=data.num_classes)
    supernet = Supernet.create(space, seed=0)  # untrained: BN re-calibration runs all the same
    ticks = itertools.count(0.0, 4.0)  # a fake clock: every reading is 4 s later
    lines: list[str] = []
    ev.fused_reference(supernet, "macs", data, torch.device("cpu"), log=lines.append,
                       clock=lambda: next(ticks))
    assert lines[0] == ("supernet prior macs: scoring 6 reference children (BN re-calibration of "
                        "each, once per supernet)...")
    middle = lines[1:-1]  # one line at most every PROGRESS_EVERY_S (10 s) of the fake clock
    assert middle and all("reference children scored," in line for line in middle)
    assert len(middle) < 6 - 1
    assert lines[-1].startswith("supernet prior macs: 6 reference children scored in ")
