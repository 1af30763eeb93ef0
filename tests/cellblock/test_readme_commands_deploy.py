"""Every command of the README's ``bash`` blocks runs as written: the ``deploy`` chain.

See ``tests/readme_blocks.py`` (its own module, so that it runs beside the other chains).
"""

from __future__ import annotations

from readme_blocks import chain_tests

workdir, test_readme_block_runs_as_written = chain_tests("deploy", demo=True)
