"""Search spaces: the define-by-run API, the block registry and the built-in spaces."""

from __future__ import annotations

from cellblock.search_spaces.api import (
    SPACES,
    Decision,
    SearchSpace,
    SpaceSize,
    arch_id,
    canonical_json,
    register_space,
    resolve_space_fn,
)
from cellblock.search_spaces.domains import Categorical, Domain, IntRange, Value
from cellblock.search_spaces.samplers import FixedSampler, RandomSampler, Sampler

__all__ = [
    "SPACES",
    "Categorical",
    "Decision",
    "Domain",
    "FixedSampler",
    "IntRange",
    "RandomSampler",
    "Sampler",
    "SearchSpace",
    "SpaceSize",
    "Value",
    "arch_id",
    "canonical_json",
    "register_space",
    "resolve_space_fn",
]

# Built-in blocks, attention modules and the ``blocks`` space register themselves on import.
from cellblock.search_spaces import blocks as _blocks  # noqa: E402,F401  (registers the blocks)
from cellblock.search_spaces import nb201 as _nb201  # noqa: E402,F401  (registers "nb201")
from cellblock.search_spaces.attention import ATTENTIONS, register_attention  # noqa: E402
from cellblock.search_spaces.blocks_base import BLOCKS, Block, register_block  # noqa: E402
from cellblock.search_spaces.blocks_space import (  # noqa: E402
    RESNET_SKELETON,
    STEMS,
    blocks,
    register_stem,
)
from cellblock.search_spaces.reference_archs import resnet18_arch, resnet50_arch  # noqa: E402

__all__ += [
    "ATTENTIONS",
    "BLOCKS",
    "Block",
    "RESNET_SKELETON",
    "STEMS",
    "blocks",
    "register_attention",
    "register_block",
    "register_stem",
    "resnet18_arch",
    "resnet50_arch",
]

# The ``darts`` cell space registers itself on import.
from cellblock.search_spaces.darts import darts, darts_v2_arch, from_genotype, to_genotype  # noqa: E402

__all__ += ["darts", "darts_v2_arch", "from_genotype", "to_genotype"]
