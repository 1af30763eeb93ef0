"""Cross-checks of cellblock.pareto against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import cellblock.pareto as pareto
from cellblock.core.errors import CellblockError, ConfigError
from cellblock.pareto import dominance

# ---------------------------------------------------------------- brute force


def bf_dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def bf_mask(F: np.ndarray) -> np.ndarray:
    finite = [bool(np.all(np.isfinite(r))) for r in F]
    out = []
    for i in range(len(F)):
        if not finite[i]:
            out.append(False)
            continue
        out.append(not any(finite[j] and bf_dominates(F[j], F[i]) for j in range(len(F)) if j != i))
    return np.array(out, dtype=bool)


def bf_rank(F: np.ndarray) -> np.ndarray:
    ranks = np.full(len(F), -1)
    finite = np.array([bool(np.all(np.isfinite(r))) for r in F], dtype=bool)
    remaining = [i for i in range(len(F)) if finite[i]]
    r = 0
    while remaining:
        front = [
            i for i in remaining if not any(bf_dominates(F[j], F[i]) for j in remaining if j != i)
        ]
        for i in front:
            ranks[i] = r
        remaining = [i for i in remaining if i not in front]
        r += 1
    ranks[~finite] = r
    return ranks


def bf_crowding(F: np.ndarray) -> np.ndarray:
    n, m = F.shape
    idx = [i for i in range(n) if all(math.isfinite(v) for v in F[i])]
    dist = {i: 0.0 for i in range(n)}
    if len(idx) <= 2:
        for i in idx:
            dist[i] = math.inf
        return np.array([dist[i] for i in range(n)])
    for j in range(m):
        srt = sorted(idx, key=lambda i, j=j: F[i, j])  # sorted() is stable
        lo, hi = F[srt[0], j], F[srt[-1], j]
        if hi == lo:
            continue
        dist[srt[0]] = math.inf
        dist[srt[-1]] = math.inf
        for k in range(1, len(srt) - 1):
            dist[srt[k]] += (F[srt[k + 1], j] - F[srt[k - 1], j]) / (hi - lo)
    return np.array([dist[i] for i in range(n)])


def bf_hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Sum of the grid cells (over the unique coordinates) dominated by some point."""
    pts = [p for p in F if np.all(np.isfinite(p)) and np.all(p < ref)]
    if not pts:
        return 0.0
    P = np.array(pts)
    axes = [np.unique(np.append(P[:, j], ref[j])) for j in range(F.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        lower = np.array([axes[j][c] for j, c in enumerate(cell)])
        upper = np.array([axes[j][c + 1] for j, c in enumerate(cell)])
        if np.any(np.all(P <= lower, axis=1)):
            total += float(np.prod(upper - lower))
    return total


# ---------------------------------------------------------------- instances


def random_instances(seed: int, count: int, m: int, max_n: int = 14):
    """Random small instances with ties, duplicates, integer grids and bad rows."""
    rng = np.random.default_rng(seed)
    for t in range(count):
        n = int(rng.integers(0, max_n + 1))
        kind = t % 4
        if kind == 0:
            F = rng.random((n, m))
        elif kind == 1:
            F = rng.integers(0, 4, size=(n, m)).astype(float)  # many ties
        elif kind == 2:
            F = rng.integers(0, 10, size=(n, m)).astype(float)
            if n:
                F = np.concatenate([F, F[rng.integers(0, n, size=3)]])  # duplicates
        else:
            F = rng.normal(size=(n, m)).round(1)
            if n >= 3:
                F[rng.integers(0, n)] = np.nan
                F[rng.integers(0, n), rng.integers(0, m)] = np.inf
                F[rng.integers(0, n), rng.integers(0, m)] = -np.inf
        yield F


# ---------------------------------------------------------------- to_minimization


def test_to_minimization_negates_maximized_columns():
    V = np.array([[0.9, 100.0], [0.8, 50.0]])
    out = pareto.to_minimization(V, ["maximize", "minimize"])
    np.testing.assert_array_equal(out, [[-0.9, 100.0], [-0.8, 50.0]])
    np.testing.assert_array_equal(V, [[0.9, 100.0], [0.8, 50.0]])  # input untouched


@pytest.mark.parametrize(
    "directions", [["maximize"], ["maximize", "up"], "maximize", ["max", "min"]]
)
def test_to_minimization_rejects_bad_directions(directions):
    with pytest.raises(ConfigError):
        pareto.to_minimization([[1.0, 2.0]], directions)


@pytest.mark.parametrize(
    "bad", [[1.0, 2.0], [[[1.0]]], [[1.0, 2.0], [3.0]], "ab", np.empty((3, 0))]
)
def test_bad_shapes_raise(bad):
    for fn in (pareto.nondominated_mask, pareto.nondominated_rank, pareto.crowding_distance):
        with pytest.raises(CellblockError):
            fn(bad)


def test_pareto_front_mixed_directions():
    V = [[0.9, 100.0], [0.8, 50.0], [0.7, 60.0], [0.9, 120.0], [0.95, 200.0]]
    idx = pareto.pareto_front(V, ["maximize", "minimize"])
    assert idx.tolist() == [0, 1, 4]


# ---------------------------------------------------------------- dominance


def test_dominates_basics():
    assert pareto.dominates([1, 2], [1, 3])
    assert not pareto.dominates([1, 3], [1, 3])
    assert not pareto.dominates([0, 4], [1, 3])
    assert pareto.dominates([5, 5], [np.nan, 0])
    assert not pareto.dominates([np.nan, 0], [5, 5])
    with pytest.raises(ConfigError):
        pareto.dominates([1, 2], [1, 2, 3])


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_mask_matches_pairwise_definition(m):
    for F in random_instances(seed=m, count=150, m=m):
        np.testing.assert_array_equal(pareto.nondominated_mask(F), bf_mask(F), err_msg=str(F))


@pytest.mark.parametrize("m", [2, 3])
def test_mask_matches_on_larger_instances(m):
    rng = np.random.default_rng(10 + m)
    for _ in range(3):
        F = rng.integers(0, 30, size=(600, m)).astype(float)
        # vectorised pairwise reference
        le = (F[:, None, :] <= F[None, :, :]).all(axis=2)
        lt = (F[:, None, :] < F[None, :, :]).any(axis=2)
        expected = ~(le & lt).any(axis=0)
        np.testing.assert_array_equal(pareto.nondominated_mask(F), expected)


def test_duplicates_of_front_point_all_on_front():
    F = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0]])
    assert pareto.nondominated_mask(F).tolist() == [True, True, True, False, True]
    F3 = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [2.0, 1.0, 1.0]])
    assert pareto.nondominated_mask(F3).tolist() == [True, True, False]


def test_nonfinite_rows_never_on_front_and_rank_last():
    F = np.array([[np.nan, 0.0], [1.0, 1.0], [-np.inf, -np.inf], [2.0, 2.0], [0.0, np.inf]])
    assert pareto.nondominated_mask(F).tolist() == [False, True, False, False, False]
    assert pareto.nondominated_rank(F).tolist() == [2, 0, 2, 1, 2]
    assert pareto.nondominated_rank(np.full((2, 3), np.nan)).tolist() == [0, 0]
    assert pareto.nondominated_mask(np.empty((0, 2))).shape == (0,)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_rank_matches_repeated_peeling(m):
    for F in random_instances(seed=100 + m, count=120, m=m):
        np.testing.assert_array_equal(pareto.nondominated_rank(F), bf_rank(F), err_msg=str(F))


def test_rank_paths_agree_on_large_input(monkeypatch):
    rng = np.random.default_rng(7)
    F = rng.integers(0, 12, size=(900, 3)).astype(float)
    matrix = pareto.nondominated_rank(F)
    monkeypatch.setattr(dominance, "_MATRIX_RANK_LIMIT", 10)  # the peeling path
    peeled = pareto.nondominated_rank(F)
    np.testing.assert_array_equal(matrix, peeled)
    # 2-D fast path vs the generic matrix sort
    G = F[:, :2]
    np.testing.assert_array_equal(pareto.nondominated_rank(G), dominance._rank_matrix(G))


# ---------------------------------------------------------------- crowding


@pytest.mark.parametrize("m", [1, 2, 3])
def test_crowding_matches_textbook(m):
    for F in random_instances(seed=200 + m, count=120, m=m):
        got = pareto.crowding_distance(F)
        np.testing.assert_allclose(got, bf_crowding(F), rtol=1e-12, atol=1e-12, err_msg=str(F))


def test_crowding_known_values():
    F = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    d = pareto.crowding_distance(F)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx(2 / 4 + 3 / 4)
    assert d[2] == pytest.approx(3 / 4 + 2 / 4)
    assert np.isinf(pareto.crowding_distance([[1.0, 2.0], [2.0, 1.0]])).all()


# ---------------------------------------------------------------- hypervolume


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_hypervolume_matches_grid_brute_force(m):
    rng = np.random.default_rng(300 + m)
    max_n = {1: 12, 2: 14, 3: 10, 4: 6}[m]
    for F in random_instances(seed=300 + m, count=120, m=m, max_n=max_n):
        ref = rng.uniform(0.3, 6.0, size=m).round(1)
        got = pareto.hypervolume(F, ref)
        assert got == pytest.approx(bf_hypervolume(F, ref), rel=1e-9, abs=1e-12), (F, ref)


def test_hypervolume_integer_grid_is_exact():
    rng = np.random.default_rng(5)
    for m in (2, 3):
        for _ in range(40):
            F = rng.integers(0, 8, size=(int(rng.integers(1, 12)), m)).astype(float)
            ref = np.full(m, 8.0)
            assert pareto.hypervolume(F, ref) == bf_hypervolume(F, ref)


def test_hypervolume_closed_forms():
    assert pareto.hypervolume([[1.0, 2.0]], [3.0, 5.0]) == pytest.approx(2 * 3)
    assert pareto.hypervolume([[1.0, 2.0, 3.0]], [2.0, 4.0, 7.0]) == pytest.approx(1 * 2 * 4)
    # staircase of k points on x + y = k inside [0, k]^2: k^2 - k(k+1)/2 ... computed directly
    k = 5
    pts = np.array([[i, k - 1 - i] for i in range(k)], dtype=float)
    assert pareto.hypervolume(pts, [k, k]) == pytest.approx(k * (k + 1) / 2)
    # two boxes in 3-D: volume of the union = sum - intersection
    a, b, ref = [0.0, 1.0, 1.0], [1.0, 0.0, 0.0], np.array([2.0, 2.0, 2.0])
    expected = 2 * 1 * 1 + 1 * 2 * 2 - 1 * 1 * 1
    assert pareto.hypervolume([a, b], ref) == pytest.approx(expected)
    # the origin dominates the whole box; everything else adds nothing
    rng = np.random.default_rng(0)
    F = np.vstack([rng.random((50, 3)), np.zeros((1, 3))])
    assert pareto.hypervolume(F, [1.0, 2.0, 3.0]) == pytest.approx(6.0)
    # points on the unit simplex-like quarter circle converge to 1 - pi/4 of the unit square
    t = np.linspace(0, np.pi / 2, 20001)
    circ = np.column_stack([1 - np.sin(t), 1 - np.cos(t)])
    assert pareto.hypervolume(circ, [1.0, 1.0]) == pytest.approx(np.pi / 4, abs=1e-3)


def test_hypervolume_ignores_points_not_strictly_better_than_ref():
    assert pareto.hypervolume([[1.0, 3.0], [3.0, 0.0], [np.nan, 0.0]], [3.0, 3.0]) == 0.0
    assert pareto.hypervolume(np.empty((0, 3)), [1.0, 1.0, 1.0]) == 0.0


@pytest.mark.parametrize("ref", [[1.0], [1.0, 2.0, 3.0], [np.nan, 1.0], [[1.0, 1.0]], "x"])
def test_hypervolume_bad_ref_raises(ref):
    with pytest.raises(ConfigError):
        pareto.hypervolume([[0.0, 0.0]], ref)


# ---------------------------------------------------------------- normalize / knee


def test_normalize():
    F = np.array([[1.0, 10.0], [3.0, 10.0], [2.0, 10.0]])
    np.testing.assert_allclose(pareto.normalize(F), [[0, 0], [1, 0], [0.5, 0]])
    np.testing.assert_allclose(
        pareto.normalize(F, [0, 0], [4, 20]), [[0.25, 0.5], [0.75, 0.5], [0.5, 0.5]]
    )
    with pytest.raises(ConfigError):
        pareto.normalize(F, [0, 0], [-1, 20])
    with pytest.raises(ConfigError):
        pareto.normalize(F, [0, 0, 0], [1, 1, 1])
    with pytest.raises(ConfigError):
        pareto.normalize(np.full((2, 2), np.nan))


def test_knee_on_convex_front():
    t = np.linspace(0, np.pi / 2, 91)  # 1-degree steps; the knee is at 45 degrees
    circ = np.column_stack([1 - np.sin(t), 1 - np.cos(t)]) * [10.0, 0.5]  # scales differ
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(circ))
    dominated = circ[:10] + 0.3
    F = np.vstack([circ[perm], dominated])
    k = pareto.knee_point(F)
    assert k == int(np.flatnonzero(perm == 45)[0])


def test_knee_sharp_corner_and_3d():
    F = np.array([[0.0, 10.0], [5.0, 5.5], [1.0, 1.0], [10.0, 0.0], [2.0, 2.0]])
    assert pareto.knee_point(F) == 2
    F3 = np.array([[0, 0, 10], [0, 10, 0], [10, 0, 0], [1, 1, 1], [4, 4, 1], [np.nan, 0, 0]])
    assert pareto.knee_point(F3) == 3
    assert pareto.knee_point([[np.nan, 1.0], [3.0, 3.0]]) == 1
    with pytest.raises(ConfigError):
        pareto.knee_point([[np.nan, 1.0]])


# ---------------------------------------------------------------- performance
