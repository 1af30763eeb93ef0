"""Issue 10, findings 3 and 4: degenerate labels are refused (or remapped on request), and
a network with the wrong number of outputs is FAILED with one line, never COMPLETE."""

from __future__ import annotations

import numpy as np
import pytest

import cellblock
from cellblock.core.errors import DataError
from cellblock.data import load_dataset
from cellblock.records import COMPLETE, FAILED, read_events


def _save(path, y, n=200):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (len(y), 1, 8, 8)).astype(np.uint8), y=np.asarray(y))
    return str(path)


def test_one_class_is_refused(tmp_path):
    with pytest.raises(DataError, match="only label 0: at least 2 classes"):
        load_dataset(_save(tmp_path / "one.npz", np.zeros(100, np.int64)))


def test_non_contiguous_labels_are_refused_or_remapped(tmp_path):
    y = (np.arange(200) % 10) * 1000
    path = _save(tmp_path / "sparse.npz", y)
    with pytest.raises(DataError,
                       match=r"not contiguous: 10 classes with labels 0, 1000, .*a 9001-way "
                             r"head.*--remap-labels"):
        load_dataset(path)
    d = load_dataset(path, remap_labels=True)
    assert d.num_classes == 10 and d.class_names == tuple(str(1000 * i) for i in range(10))
    assert int(d.y_train.max()) == 9


def test_stray_label_is_refused(tmp_path):
    y = np.concatenate([np.arange(200) % 10, [10]])
    with pytest.raises(DataError, match="class 10 has 1 sample.*validation split.*stray label"):
        load_dataset(_save(tmp_path / "stray.npz", y))


HEAD_SPACE = '''
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10):
    extra = s.choice("extra", [0, 5, -3])
    if not s.build:
        return None
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes + extra))
'''


def test_wrong_number_of_outputs_is_failed_with_one_line(tmp_path):
    (tmp_path / "sp.py").write_text(HEAD_SPACE)
    run = cellblock.search(space=f"{tmp_path / 'sp.py'}:space", trials=3, epochs=1,
                           out=str(tmp_path / "run"),
                           device="cpu", objectives=["accuracy", "params"], strategy="random")
    by_extra = {t.arch["extra"]: t for t in run.trials}
    assert by_extra[0].status == COMPLETE
    for extra, width in ((5, 15), (-3, 7)):
        t = by_extra[extra]
        assert t.status == FAILED, (extra, t.status, t.metrics)
        assert t.error == (f"the network outputs shape (64, {width}) for a batch of 64, expected "
                           "(64, 10) (10 classes); check the space's head / num_classes")
    assert [t.arch["extra"] for t in run.pareto] == [0]


def test_remap_is_recorded_in_the_run(tmp_path):
    path = _save(tmp_path / "sparse.npz", (np.arange(120) % 3) * 7)
    (tmp_path / "sp.py").write_text(HEAD_SPACE.replace("[0, 5, -3]", "[0]"))
    cellblock.search(space=f"{tmp_path / 'sp.py'}:space", dataset=path, remap_labels=True, trials=1,
                     epochs=1, out=str(tmp_path / "run"), device="cpu",
                     objectives=["accuracy", "params"],
                     strategy="random", space_args={})
    start = read_events(tmp_path / "run" / "trials.jsonl")[0]
    assert start["inputs"]["labels"]["original_labels"] == ["0", "7", "14"]
    assert start["config"]["remap_labels"] is True
    import json

    from cellblock.export import export_items, items_from_run, select_trials

    items = items_from_run(tmp_path / "run",
                           select_trials(cellblock.load_run(str(tmp_path / "run")), trial=0))
    export_items(items, tmp_path / "exp", ["json"])
    doc = json.loads(next((tmp_path / "exp").rglob("arch.json")).read_text())
    assert doc["class_labels"] == ["0", "7", "14"] and doc["space_kwargs"]["num_classes"] == 3
