"""Issue 28, "bad inputs by the hundred": property-based tests (hypothesis) of the log reader,
the config loader and the ``.npz`` loader.

Each generates malformed inputs, every one invalid by construction, and requires of the
command that reads it: one line (``cellblock: error: ...``), exit 2, and no change to the
run directory. ``TRIED`` counts the inputs tried (printed at the end of each test).
"""

from __future__ import annotations

import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_run import copy_run, search_argv, shared_run, snapshot

from cellblock.cli import main
from cellblock.core.config import FIELDS
from cellblock.records.log import STATUSES

#: Malformed inputs tried, per property.
TRIED: Counter = Counter()
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[str]]:
    return shared_run(tmp_path_factory)


def _refused_untouched(argv_for, run_source: Path, capsys, prepare) -> None:
    """Copy the run, ``prepare(folder, run)`` the bad input, run the command; check it."""
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(run_source, Path(tmp))
        prepare(Path(tmp), run)
        before = snapshot(Path(tmp)), sorted(Path(tmp).rglob("*"))
        code = main(argv_for(Path(tmp), run))
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("cellblock: error: "), err
        # no file or folder changed
        assert (snapshot(Path(tmp)), sorted(Path(tmp).rglob("*"))) == before


# ---- the log reader ------------------------------------------------------------------------
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(SCALARS,
                    lambda inner: (st.lists(inner, max_size=3)
                                   | st.dictionaries(st.text(), inner, max_size=3)),
                    max_leaves=8)
REQUIRED = {"run_start": ["event", "config"], "trial_start": ["event", "trial", "arch_id", "arch"],
            "trial_end": ["event", "trial", "arch_id", "status"], "run_end": ["event"]}


@st.composite
def bad_event_line(draw, events: list[dict]) -> bytes:
    """One line of a log that is not a valid event, made so by construction."""
    kind = draw(st.sampled_from(["garbage", "not-object", "no-key", "bad-kind", "bad-trial",
                                 "bad-arch", "bad-status", "unknown-trial", "bad-time"]))
    if kind == "garbage":
        raw = draw(st.binary(min_size=1,
                             max_size=40).filter(lambda b: b"\n" not in b and b.strip()))
        return b"{" + raw  # never valid JSON: an object that is not closed... or not UTF-8
    if kind == "not-object":
        return json.dumps(draw(JSON.filter(lambda v: not isinstance(v, dict)))).encode()
    ev = dict(draw(st.sampled_from(events)))
    if kind == "no-key":
        del ev[draw(st.sampled_from(REQUIRED[ev["event"]]))]
    elif kind == "bad-kind":
        ev["event"] = draw(JSON.filter(lambda v: not (isinstance(v, str) and v in REQUIRED)))
    elif kind == "bad-trial":
        ev = dict(draw(st.sampled_from([e for e in events if e["event"].startswith("trial_")])))
        ev["trial"] = draw(st.text() | st.floats() | st.booleans() | st.none()
                           | st.integers(max_value=-1) | st.lists(st.integers(), max_size=2))
    elif kind == "bad-arch":
        ev = dict(draw(st.sampled_from([e for e in events if e["event"] == "trial_start"])))
        ev["arch"] = draw(JSON.filter(lambda v: not isinstance(v, dict)))
    elif kind == "bad-status":
        ev = dict(draw(st.sampled_from([e for e in events if e["event"] == "trial_end"])))
        ev["status"] = draw(JSON.filter(lambda v: v not in STATUSES))
    elif kind == "unknown-trial":
        ev = dict(draw(st.sampled_from([e for e in events if e["event"] == "trial_end"])))
        ev["trial"] = draw(st.integers(min_value=1000, max_value=10**9))
    else:
        ev["t"] = draw(st.text() | st.lists(st.integers(), max_size=2) | st.booleans())
    return json.dumps(ev).encode()


def _log_events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]


@given(data=st.data())
@SETTINGS
def test_log_reader_refuses_malformed_lines(finished, capsys, data):
    run_source, argv = finished
    lines = (run_source / "trials.jsonl").read_bytes().splitlines()
    bad = data.draw(bad_event_line(_log_events(run_source)))
    at = data.draw(st.integers(0, len(lines)))
    command = data.draw(st.sampled_from(["show", "report", "export", "train", "search"]))

    def prepare(tmp: Path, run: Path) -> None:
        (run / "trials.jsonl").write_bytes(b"\n".join([*lines[:at], bad, *lines[at:]]) + b"\n")

    def argv_for(tmp: Path, run: Path) -> list[str]:
        return {"show": ["show", str(run)], "report": ["report", str(run)],
                "export": ["export", str(run), "--trial", "0", "--format", "json", "--out",
                           str(tmp / "e")],
                "train": ["train", str(run), "--trial", "0", "--epochs", "1", "--no-progress"],
                "search": [*argv, "--out", str(run)]}[command]

    _refused_untouched(argv_for, run_source, capsys, prepare)
    TRIED["log"] += 1


# ---- the config loader ---------------------------------------------------------------------
def _wrong_value(name: str) -> st.SearchStrategy:
    """Values of a type config key ``name`` does not accept."""
    types = FIELDS[name].types
    options = []
    if str not in types:
        options.append(st.text(min_size=1))
    if int not in types and float not in types:
        options.append(st.integers())
    if list not in types:
        options.append(st.lists(st.integers(), min_size=1, max_size=3))
    if dict not in types:
        options.append(st.dictionaries(st.text(min_size=1), st.integers(), min_size=1, max_size=2))
    if not FIELDS[name].nullable:
        options.append(st.none())
    return st.one_of(options)


@st.composite
def bad_config(draw) -> bytes:
    """A YAML config file that is malformed, by construction."""
    kind = draw(st.sampled_from(["unknown-key", "wrong-type", "out-of-range", "syntax",
                                 "not-mapping",
                                 "not-utf8", "python-tag"]))
    if kind == "unknown-key":
        key = draw(st.text(min_size=1,
                           max_size=12).filter(lambda k: k not in FIELDS and k.strip() == k))
        return yaml.safe_dump({key: draw(st.integers())}).encode()
    if kind == "wrong-type":
        key = draw(st.sampled_from(sorted(k for k in FIELDS
                                          if k not in ("space_args", "strategy_args", "out"))))
        return yaml.safe_dump({key: draw(_wrong_value(key))}).encode()
    if kind == "out-of-range":
        key, value = draw(st.sampled_from([("trials", 0), ("epochs", -1), ("batch_size", 0),
                                           ("lr", -0.5),
                                           ("val_fraction", 1.5), ("seed", -3),
                                           ("latency_max_spread", 1.0),
                                           ("device", "tpu"), ("scheduler", "hyperband"),
                                           ("reduction_factor", 1),
                                           ("resources_per_trial", "cpu")]))
        return yaml.safe_dump({key: value}).encode()
    if kind == "syntax":
        head = draw(
            st.dictionaries(st.sampled_from(["trials", "epochs"]), st.integers(1, 3), max_size=2))
        broken = draw(st.sampled_from([b"trials: [1, 2\n", b"a: b: c\n", b"lr: 'x\n",
                                       b"- a\nb: c\n",
                                       b"epochs: 2\n\tseed: 2\n", b"{trials: 3\n", b"seed: {\n",
                                       b"? [\n"]))
        return (yaml.safe_dump(head).encode() if head else b"") + broken
    if kind == "not-mapping":
        value = draw(st.lists(st.integers(), min_size=1, max_size=3) | st.integers()
                     | st.text(min_size=1).filter(lambda t: yaml.safe_load(yaml.safe_dump(t)) == t))
        return yaml.safe_dump(value).encode()
    if kind == "not-utf8":
        return b"trials: 3\nspace: " + draw(
            st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\x80abc"])) + b"\n"
    return b"trials: !!python/object/apply:os.system ['echo hi']\n"


@given(data=st.data())
@SETTINGS
def test_config_loader_refuses_malformed_files(finished, capsys, data):
    run_source, argv = finished
    text = data.draw(bad_config())

    def prepare(tmp: Path, run: Path) -> None:
        (tmp / "bad.yaml").write_bytes(text)

    def argv_for(tmp: Path, run: Path) -> list[str]:
        # no key overridden
        return ["search", str(tmp / "bad.yaml"), "--out", str(run), "--no-progress"]

    _refused_untouched(argv_for, run_source, capsys, prepare)
    TRIED["config"] += 1


# ---- the .npz loader -----------------------------------------------------------------------
def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, 8, 8), dtype=np.float32)


@st.composite
def bad_npz(draw) -> bytes:
    """The bytes of a custom-data file that is malformed, by construction."""
    n = draw(st.integers(6, 30))
    x, y = _images(n), np.arange(n) % 3
    kind = draw(st.sampled_from(["garbage", "missing", "y-length", "y-2d", "y-negative",
                                 "y-fraction",
                                 "y-text", "one-class", "label-gap", "x-nan", "x-text", "x-range",
                                 "x-ndim", "empty"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    arrays: dict[str, np.ndarray] = {"x": x, "y": y}
    if kind == "missing":
        arrays.pop(draw(st.sampled_from(["x", "y"])))
        arrays[draw(st.sampled_from(["images", "labels", "X"]))] = x
    elif kind == "y-length":
        arrays["y"] = np.arange(n + draw(st.integers(1, 5))) % 3
    elif kind == "y-2d":
        arrays["y"] = np.stack([y, y], axis=1)
    elif kind == "y-negative":
        arrays["y"] = y - draw(st.integers(1, 5))
    elif kind == "y-fraction":
        arrays["y"] = y + 0.5
    elif kind == "y-text":
        arrays["y"] = np.array([draw(st.sampled_from(["cat", "dog"]))] * n)
    elif kind == "one-class":
        arrays["y"] = np.zeros(n, dtype=np.int64)
    elif kind == "label-gap":
        arrays["y"] = (np.arange(n) % 2) * draw(st.integers(2, 9))
    elif kind == "x-nan":
        x[draw(st.integers(0, n - 1)), 0, 0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "x-text":
        arrays["x"] = np.array([["a" * 3] * 8] * n)
    elif kind == "x-range":
        arrays["x"] = (x * 100).astype(np.int64) + draw(st.sampled_from([256, -300]))
    elif kind == "x-ndim":
        arrays["x"] = x.reshape(n, -1)[:, :, None, None, None] if draw(st.booleans()) else x[:, 0,
                                                                                             0]
    else:
        arrays = {"x": x[:0], "y": y[:0]}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@given(data=st.data())
@SETTINGS
def test_npz_loader_refuses_malformed_files(finished, capsys, data):
    run_source, argv = finished
    content = data.draw(bad_npz())

    def prepare(tmp: Path, run: Path) -> None:
        (tmp / "bad.npz").write_bytes(content)

    # a new run on the bad data, beside the old one
    def argv_for(tmp: Path, run: Path) -> list[str]:
        return [*search_argv(run_source.parent / "sp.py"), "--dataset", str(tmp / "bad.npz"),
                "--out", str(tmp / "new")]

    _refused_untouched(argv_for, run_source, capsys, prepare)
    TRIED["npz"] += 1


def test_zz_report_how_many_bad_inputs_were_tried():
    """Prints the count (run with -s); 0 when the property tests did not run in this session."""
    print(f"\nbad inputs tried: {dict(TRIED)}, total {sum(TRIED.values())}")
    if TRIED:
        assert all(v >= 100 for v in TRIED.values()), TRIED

