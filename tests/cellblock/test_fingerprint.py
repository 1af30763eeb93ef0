"""Issue 10, finding 2: a run continued on changed inputs (dataset, space file) is refused,
unless explicitly allowed (and then recorded)."""

from __future__ import annotations

import numpy as np
import pytest
from spaces import conv_space

import cellblock
from cellblock.core.config import RunConfig
from cellblock.core.errors import RunError
from cellblock.records import read_events
from cellblock.run.fingerprint import content_hash, input_fingerprint

SPACE = conv_space([2, 4, 6, 8], num_classes=3)


def _npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (60, 1, 8, 8)).astype(np.uint8), y=np.arange(60) % 3)


def _opts(tmp_path, trials, **kw):
    return dict(space=f"{tmp_path / 'sp.py'}:space", dataset=str(tmp_path / "d.npz"), trials=trials,
                epochs=1, out=str(tmp_path / "run"), device="cpu",
                objectives=["accuracy", "params"],
                strategy="random", **kw)


def test_changed_dataset_or_space_file_is_refused_untouched_unless_allowed(tmp_path):
    (tmp_path / "sp.py").write_text(SPACE)
    _npz(tmp_path / "d.npz", 0)
    cellblock.search(**_opts(tmp_path, 2))
    start = [e for e in read_events(tmp_path / "run" / "trials.jsonl")
             if e["event"] == "run_start"][0]
    assert start["inputs"]["dataset"]["sha256"] == content_hash(tmp_path / "d.npz")
    assert start["inputs"]["space"]["sha256"] == content_hash(tmp_path / "sp.py")
    assert len(start["machine"]["load_avg"]) == 3
    _npz(tmp_path / "d.npz", 1)  # other data behind the same name
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(RunError,
                       match=r"inputs of run .* changed .*dataset '.*d\.npz' \(content "
                             r"[0-9a-f]{12} then"):
        cellblock.search(**_opts(tmp_path, 3))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    run = cellblock.search(**_opts(tmp_path, 3, allow_changed_inputs=True))
    assert len(run.trials) == 3
    starts = [e for e in read_events(tmp_path / "run" / "trials.jsonl")
              if e["event"] == "run_start"]
    assert "dataset" in starts[-1]["inputs_changed_allowed"][0]
    (tmp_path / "sp.py").write_text(SPACE + "\n# edited\n")
    with pytest.raises(RunError, match="changed .*space '.*sp.py'"):
        cellblock.search(**_opts(tmp_path, 4))


def test_fingerprint_hashes_folders_and_names_builtins(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    h1 = content_hash(tmp_path / "a")
    (tmp_path / "a" / "x.png").write_bytes(b"2")
    assert content_hash(tmp_path / "a") != h1
    fp = input_fingerprint(
        RunConfig(dataset="digits", space="blocks", supernet=str(tmp_path / "none.pt")))
    assert fp["dataset"] == {"name": "digits"} and fp["space"] == {"name": "blocks"}
    assert fp["supernet"]["sha256"] is None
