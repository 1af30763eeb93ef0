"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

import cellblock
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.blocks_base import BLOCKS

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")


def test_custom_space_example(tmp_path, monkeypatch):
    code = next(b for b in _python_blocks() if b.startswith("# my_space.py"))
    (tmp_path / "my_space.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    usage = next(b for b in _python_blocks() if "space.size()" in b)
    namespace: dict = {}
    exec(usage, namespace)  # noqa: S102  (the README's own snippet)
    space = namespace["space"]
    assert space.size().value == 156 and space.size().exact
    assert isinstance(namespace["net"], torch.nn.Module)
    run = cellblock.search(space="my_space.py:my_space", trials=2, epochs=1,
                           out=str(tmp_path / "run"),
                           device="cpu", objectives=["accuracy", "macs"])
    assert len(run.trials) == 2 and run.pareto


def test_search_from_python_example(tmp_path, monkeypatch):
    code = next(b for b in _python_blocks() if b.startswith("# search_from_python.py"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102  (the README's own snippet)
    run = namespace["run"]
    assert run.config == namespace["cfg"].replace(backend="local", concurrency=1,
                                                  resources_per_trial="cpu=1")
    assert len(run.trials) == 2 and run.pareto
    assert (tmp_path / "results" / "runs" / "from-python" / "trials.jsonl").is_file()


def test_custom_block_example():
    code = next(b for b in _python_blocks() if "@register_block" in b)
    try:
        exec(code, {})  # noqa: S102
        space = SearchSpace("blocks", block_types=["basic", "double_conv"])
        rng = np.random.default_rng(0)
        seen = set()
        for _ in range(20):
            arch = space.sample(rng)
            seen.update(arch[k] for k in arch if k.endswith(".block"))
            out = space.build(arch)(torch.zeros(2, 1, 8, 8))
            assert out.shape == (2, 10)
        assert "double_conv" in seen
    finally:
        BLOCKS.unregister("double_conv")
