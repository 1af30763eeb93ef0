"""Contract tests over every registry (timm-style): a plugin someone registers is tested here
without new test code. Each test is parametrised by the registry's names at collection time.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cellblock.core.config import RunConfig
from cellblock.core.errors import CellblockError, DataError
from cellblock.core.objectives import parse_objectives
from cellblock.data import DATASETS, load_dataset
from cellblock.evaluators import EVALUATORS, Evaluator
from cellblock.records import COMPLETE, FAILED, Trial
from cellblock.search_spaces import ATTENTIONS, BLOCKS, SPACES, SearchSpace, arch_id
from cellblock.search_spaces.blocks_base import build_stage
from cellblock.strategies import STRATEGIES, make_strategy

_OPTIONAL = {"optuna:cmaes": "cmaes"}  # strategies whose sampler needs an optional package


def _bits(s, n=10):
    return [s.choice(f"b{i}", [0, 1]) for i in range(n)]


# ---- spaces ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACES.names())
def test_space_contract(name):
    """Sampling is deterministic, the arch replays exactly, and the network has the head it
    promises at the space's default input shape."""
    space = SearchSpace(name)
    shape, classes = tuple(space.arguments()["input_shape"]), space.arguments()["num_classes"]
    a, b = space.sample(np.random.default_rng(3)), space.sample(np.random.default_rng(3))
    assert a == b and arch_id(a) == arch_id(b)
    assert json.loads(json.dumps(a)) == a  # an arch is a JSON dict
    space.validate(a)
    torch.manual_seed(0)
    net = space.build(a).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    bad = dict(a)
    bad[next(iter(bad))] = "__not_a_value__"
    with pytest.raises(CellblockError, match=next(iter(bad))):  # the error names the decision
        space.validate(bad)


# ---- blocks x attention ---------------------------------------------------------------------
def _options(cls):
    return {k: (4 if k == "cardinality" else 2 if k == "expansion" else v[-1])
            for k, v in cls.options.items()}


@pytest.mark.parametrize("attention", ATTENTIONS.names())
@pytest.mark.parametrize("block", BLOCKS.names())
def test_block_attention_contract(block, attention):
    """Every block with every attention: declared output channels, stride halves the map."""
    cls = BLOCKS.get(block)
    opts = _options(cls)
    x = torch.randn(2, 8, 8, 8)
    for stride, size in ((1, 8), (2, 4)):
        torch.manual_seed(0)
        stage = build_stage(block, 8, 16, stride, 2, attention=attention, **opts)
        out = stage(x)
        assert out.shape == (2, cls.out_channels(16, **opts), size, size)
        assert torch.isfinite(out).all()


# ---- strategies ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_contract(name, tmp_path):
    """Valid asks, failures told without crashing, and a state round trip that continues
    with the same proposals (with the run-owned options a run directory gives it)."""
    if name in _OPTIONAL:
        pytest.importorskip(_OPTIONAL[name], reason=f"{name} needs the optional {_OPTIONAL[name]}")
    space = SearchSpace(_bits)
    objectives = parse_objectives("accuracy,macs")
    hook = getattr(STRATEGIES.get(name), "run_options", None)
    run_a, run_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    run_a.mkdir(parents=True)

    def options(run_dir):
        opts = dict(hook(RunConfig(constraints=()), run_dir)) if hook else {}
        if name == "optuna:gp":
            opts["n_startup_trials"] = 5  # a few GP fits, not many: keep the test fast
        return opts

    s = make_strategy(name, space, objectives, seed=4, options=options(run_a))
    for n in range(14):
        arch = s.ask()
        space.validate(arch)
        ones = sum(arch.values())
        failed = n % 5 == 4
        s.tell(Trial(number=n, arch_id=arch_id(arch), arch=arch,
                     status=FAILED if failed else COMPLETE,
                     metrics={} if failed else {"accuracy": ones / 10, "macs": ones + 1},
                     error="boom" if failed else None))
    state = s.state_dict()
    shutil.copytree(run_a, run_b)  # a resumed run sees the files the run left (e.g. a journal)
    clone = make_strategy(name, space, objectives, seed=77, options=options(run_b))
    clone.load_state_dict(json.loads(json.dumps(state)))  # the state is JSON
    asks = [clone.ask() for _ in range(3)]
    for arch in asks:
        space.validate(arch)
    if hook is None:  # the strategy's state is all in state_dict(): it continues exactly
        assert [s.ask() for _ in range(3)] == asks


# ---- evaluators ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", EVALUATORS.names())
def test_evaluator_contract(name):
    """Every evaluator is an Evaluator that says whether it needs a dataset and documents itself."""
    cls = EVALUATORS.get(name)
    assert issubclass(cls, Evaluator)
    assert isinstance(cls.needs_data, bool)
    assert (cls.__doc__ or "").strip(), f"evaluator {name!r} has no docstring"


# ---- datasets ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name, tmp_path):
    """A registered dataset loads into the normalised form, or, when its files are absent and
    download is off, fails with one DataError that says how to get them."""
    try:
        data = load_dataset(name, str(tmp_path), download=False)
    except DataError as exc:
        assert "\n" not in str(exc).strip() and "download" in str(exc).lower()
        return
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.shape[1:] == tuple(data.input_shape)
    for y in (data.y_train, data.y_val, data.y_test):
        assert int(y.min()) >= 0 and int(y.max()) < data.num_classes
    assert len(set(data.y_train.tolist())) >= 2


# ---- export formats -------------------------------------------------------------------------
def _format_names() -> list[str]:
    from cellblock.export.formats import FORMATS

    return FORMATS.names()


@pytest.mark.parametrize("fmt", _format_names())
def test_export_format_contract(fmt, tmp_path):
    """Every registered format writes its files and passes its own round trip (same
    parameters, MACs and outputs), or is refused in one line when its packages are missing."""
    from cellblock.core.errors import ConfigError
    from cellblock.export import ExportItem, export_items
    from cellblock.export.formats import missing_packages

    space = SearchSpace("nb201", input_shape=(1, 8, 8), num_classes=10, C=4, N=1)
    arch = space.sample(np.random.default_rng(0))
    item = ExportItem("tiny", arch, space, seed=0)
    if missing_packages(fmt)[0]:
        with pytest.raises(ConfigError, match="pip install"):
            export_items([item], tmp_path / "out", [fmt])
        assert not (tmp_path / "out").exists()
        return
    report = export_items([item], tmp_path / "out", [fmt])
    result = report["exports"][0]["formats"][fmt]
    assert report["ok"] and "error" not in result
    assert all(result.get(k) is not False for k in ("params_ok", "macs_ok", "outputs_ok"))
    assert any((tmp_path / "out" / "tiny").iterdir())
