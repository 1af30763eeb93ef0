"""Every command of the README's ``bash`` blocks runs as written: the ``main`` chain.

See ``tests/readme_blocks.py`` for the rules; the other chains have their own modules
(``test_readme_commands_*.py``) so that they run in parallel.
"""

from __future__ import annotations

import re

from readme_blocks import CHAINS, README, bash_blocks, chain_tests

workdir, test_readme_block_runs_as_written = chain_tests("main")


def test_the_readme_has_commands_and_starts_with_the_two():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    assert len(bash_blocks()) >= 5


def test_every_block_is_in_exactly_one_chain():
    chains = ["main", *CHAINS]
    assert sum(len(bash_blocks(c)) for c in chains) == len(bash_blocks())
    assert all(bash_blocks(c) for c in chains), "a chain names no README section with commands"

