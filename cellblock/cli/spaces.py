"""``cellblock spaces``: built-in spaces with sizes, and registered blocks."""

from __future__ import annotations

import argparse

from cellblock.cli.common import command
from cellblock.core.errors import CellblockError

#: Knuth probes of a size estimate here (SearchSpace.size's default is 2,000): a listing needs
#: the order of magnitude, and each probe runs the space function once.
SIZE_PROBES = 400


@command("spaces")
def _add_spaces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="built-in spaces (with sizes) and registered blocks")
    p.set_defaults(func=_spaces)


def _spaces(args: argparse.Namespace) -> int:
    from cellblock.search_spaces import SPACES, SearchSpace
    from cellblock.search_spaces.blocks_base import BLOCKS

    print("spaces (default skeleton):")
    for name in SPACES.names():
        try:
            space = SearchSpace(name)
            decisions = len(space.sample(__import__("numpy").random.default_rng(0)))
            size = space.size(probes=SIZE_PROBES)
            print(f"  {name:<12} size {str(size):>14}   ({decisions} decisions in a sample)")
        except CellblockError as exc:
            print(f"  {name:<12} (needs options: {exc})")
    from cellblock.search_spaces.blocks_space import OPTION_ARGS

    skeleton = SearchSpace("blocks").arguments()
    print("blocks (option choices of the default blocks skeleton; 'own': the block class's "
          "default choices, where they differ):")
    for name in BLOCKS.names():
        options = getattr(BLOCKS.get(name), "options", {}) or {}
        shown = []
        for k, v in options.items():
            arg = OPTION_ARGS.get(k)
            used = list(skeleton[arg]) if arg in skeleton else list(v)
            shown.append(f"{k} {used}" + (f" (own {list(v)})" if used != list(v) else ""))
        print(f"  {name:<12} options: {', '.join(shown) or '-'}")
    return 0
