"""The NAS-Bench-201 space: size, official strings, costs against the published numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellblock.core.errors import ArchValidationError, SpaceError
from cellblock.evaluators.cost import count_macs, count_params
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.nb201 import (
    EDGE_NAMES,
    NB201_OPS,
    cost_representative,
    from_nb201_string,
    to_nb201_string,
)

EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
           "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def uniform(op: str) -> dict[str, str]:
    return {name: op for name in EDGE_NAMES}


def costs(space: SearchSpace, arch: dict[str, str]) -> tuple[int, int]:
    model = space.build(arch)
    return count_macs(model, (3, 32, 32)), count_params(model)


def test_decisions_in_official_order_and_size():
    space = SearchSpace("nb201")
    arch = space.sample(np.random.default_rng(0))
    assert list(space.validate(arch)) == ["edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0",
                                          "edge_3_1", "edge_3_2"]
    size = space.size()
    assert size.exact and size.value == 15625


def test_string_example_and_round_trip():
    arch = from_nb201_string(EXAMPLE)
    assert arch == {"edge_1_0": "nor_conv_3x3", "edge_2_0": "nor_conv_3x3",
                    "edge_2_1": "avg_pool_3x3",
                    "edge_3_0": "skip_connect", "edge_3_1": "nor_conv_3x3",
                    "edge_3_2": "skip_connect"}
    assert to_nb201_string(arch) == EXAMPLE
    space = SearchSpace("nb201")
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = space.sample(rng)
        assert from_nb201_string(to_nb201_string(a)) == a


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 nodes"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "conv_5x5"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "OP~0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 edges"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
    ],
)
def test_bad_strings_name_the_problem(text, needle):
    with pytest.raises(ArchValidationError, match=needle) as info:
        from_nb201_string(text)
    if needle == "conv_5x5":
        assert "nor_conv_1x1" in str(info.value)  # lists the allowed operations


def test_to_string_rejects_incomplete_arch():
    arch = uniform("none")
    del arch["edge_3_2"]
    with pytest.raises(ArchValidationError, match="edge_3_2"):
        to_nb201_string(arch)


def test_bad_op_value_is_rejected_by_the_space():
    with pytest.raises(ArchValidationError, match="edge_1_0"):
        SearchSpace("nb201").build({**uniform("none"), "edge_1_0": "conv_5x5"})
    with pytest.raises(SpaceError, match="ops"):
        SearchSpace("nb201", ops=["none", "sep_conv"]).sample(np.random.default_rng(0))


def test_published_costs_cifar10():
    """NAS-Bench-201 CIFAR-10 cost info: FLOPs 7.78305 .. 220.11969 M, params 0.073306 .. 1.531546
    M.

    Our MACs are 10 lower (the official counter adds the classifier's bias, one op per class).
    """
    space = SearchSpace("nb201", input_shape=(3, 32, 32), num_classes=10)
    assert costs(space, uniform("nor_conv_3x3")) == (220_119_680, 1_531_546)
    assert costs(space, uniform("none")) == (7_783_040, 73_306)


def test_published_costs_cifar100():
    """CIFAR-100: published 7.78890 .. 220.12554 M FLOPs, 0.079156 .. 1.537396 M params."""
    space = SearchSpace("nb201", num_classes=100)
    assert costs(space, uniform("nor_conv_3x3")) == (220_125_440, 1_537_396)
    assert costs(space, uniform("none"))[1] == 79_156


def test_forward_shapes_and_affine_bn():
    space = SearchSpace("nb201", C=8, N=1, num_classes=7)
    model = space.build(from_nb201_string(EXAMPLE))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.affine for m in bns)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)


def test_cost_representative_has_equal_costs():
    space = SearchSpace("nb201", C=4, N=1)
    rng = np.random.default_rng(2)
    reps = set()
    for _ in range(12):
        a = space.sample(rng)
        rep = cost_representative(a)
        reps.add(tuple(rep.values()))
        assert costs(space, a) == costs(space, rep)
    all_reps = {tuple(cost_representative(dict(zip(EDGE_NAMES, ops))).values())
                for ops in np.array(np.meshgrid(*[NB201_OPS] * 6)).T.reshape(-1, 6).tolist()}
    assert len(all_reps) == 28
