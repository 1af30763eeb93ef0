"""What a supernet's ranking is compared with: a stratified sample and equal-cost baselines.

- :func:`sample_stratified`: architectures spread over the parameter-count range (one per
  quantile bin of a larger random pool), so the ranking is not judged on a sample that
  happens to bunch up in one size.
- Zero-cost baselines scored on the same architectures: parameter count, MACs, and the
  proxies ``synflow`` and ``naswot`` of :mod:`cellblock.evaluators.proxies` on the
  freshly initialised network.
- :func:`equal_cost_steps`: the SGD steps per architecture whose total stand-alone
  training time equals the supernet's training plus evaluation time (the stand-alone
  baseline of the same cost).
- :func:`verdict`: whether the supernet (or the supernet fused with a cost prior) beats
  every equal-cost baseline, else which one to search with instead; :func:`rank_table`
  and :func:`tau_warning`: the report ``cellblock supernet rank`` prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cellblock.evaluators.proxies import PROXY_BATCH_SIZE, naswot, synflow
from cellblock.search_spaces.api import SearchSpace, arch_id, sample_distinct
from cellblock.supernet.bank import meta_build

#: Random architectures drawn per requested one before the quantile bins are cut.
POOL_FACTOR = 5
#: Baselines that need no training, in report order (score: higher = predicted better).
ZERO_COST = ("params", "macs", "synflow", "naswot")
#: Substitute for a non-finite proxy score (ranks last), so Kendall tau stays defined.
WORST = -1e300
#: Below this Kendall tau the supernet's ranking is not worth searching over.
TAU_WARNING = 0.3


def param_count(space: SearchSpace, arch: Mapping[str, Any]) -> int:
    """Parameters of ``arch``'s network (built on ``meta``: no memory, no initialisation)."""
    with meta_build():
        model = space.build(arch)
    return int(sum(p.numel() for p in model.parameters()))


def sample_stratified(space: SearchSpace, k: int, seed: int,
                      pool_factor: int = POOL_FACTOR) -> list[dict[str, Any]]:
    """``k`` distinct architectures, one per parameter-count quantile bin of a random pool.

    The pool holds ``pool_factor * k`` distinct random architectures (fewer in a small
    space); it is sorted by parameter count and cut into ``k`` bins of near-equal size,
    and one architecture is drawn from each bin (seeded). Returned in bin order.
    """

    pool = sample_distinct(space, pool_factor * k, seed)
    if len(pool) <= k:
        return pool
    sized = sorted(((param_count(space, a), arch_id(a), a) for a in pool), key=lambda t: t[:2])
    rng = np.random.default_rng(seed + 1)
    bins = np.array_split(np.arange(len(sized)), k)
    return [sized[int(rng.choice(b))][2] for b in bins]


def _score(fn: Any, *args: Any) -> tuple[float, str | None]:
    try:
        value = float(fn(*args))
    except (RuntimeError, ValueError) as exc:  # a proxy that fails on this network ranks it last
        return WORST, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return (value, None) if math.isfinite(value) else (WORST, None)


def proxy_scores(model: torch.nn.Module, input_shape: Sequence[int], x: torch.Tensor) -> dict[str,
                                                                                              Any]:
    """``synflow`` and ``naswot`` of an initialised network, with their time in seconds.

    A non-finite score, or a proxy that raises on this network, gets :data:`WORST` (the
    error goes to ``<proxy>_error``).
    """
    t0 = time.perf_counter()
    s, s_err = _score(synflow, model, input_shape)
    t1 = time.perf_counter()
    n, n_err = _score(naswot, model, x)
    t2 = time.perf_counter()
    return {"synflow": s, "naswot": n, "synflow_s": t1 - t0, "naswot_s": t2 - t1,
            "synflow_error": s_err, "naswot_error": n_err}


def proxy_batch(x_train: torch.Tensor, seed: int) -> torch.Tensor:
    """The fixed minibatch of the data-dependent proxies (as in a run: seeded train images)."""
    gen = torch.Generator().manual_seed(seed)
    return x_train[torch.randperm(len(x_train), generator=gen)[:PROXY_BATCH_SIZE]]


def equal_cost_steps(budget_s: float, step_s: Sequence[float]) -> int:
    """Steps per architecture whose total stand-alone time fits ``budget_s`` (0: not one).

    Args:
        budget_s: The supernet's training plus evaluation time.
        step_s: Per architecture, the measured time of one stand-alone training step.
    """
    total = float(sum(step_s))
    return int(budget_s // total) if total > 0 else 0


def verdict(supernet_tau: float | None, baselines: Mapping[str, float | None],
            prior: str | None = None, fused_tau: float | None = None) -> str:
    """One line: does the supernet beat every equal-cost baseline; if not, what to use.

    ``fused_tau`` is the Kendall tau of the supernet's accuracy fused with ``prior``
    (:mod:`cellblock.supernet.prior`, at the supernet's cost). When the supernet alone does
    not beat every baseline but the fused score does, the line says to search with that;
    when both do and the fused one ranks better, the line says so.
    """
    known = {k: v for k, v in baselines.items() if v is not None}
    if supernet_tau is None:
        best = max(known, key=known.get) if known else None
        return ("verdict: the supernet's Kendall tau is undefined (constant accuracies); "
                + (f"search with {best} instead (tau {known[best]:.3f}{_how(best)})" if best else
                   "no baseline is defined either"))
    better = {k: v for k, v in known.items() if v >= supernet_tau}
    use = f"--evaluator supernet --supernet-prior {prior}, objective supernet_score"
    fused_wins = fused_tau is not None and all(v < fused_tau for v in known.values())
    if not better:
        line = (f"verdict: the supernet (tau {supernet_tau:.3f}) beats every equal-cost baseline "
                f"({', '.join(f'{k} {v:.3f}' for k, v in known.items())}); search with it")
        if fused_wins and fused_tau > supernet_tau:
            line += f"; supernet+{prior} ranks better still (tau {fused_tau:.3f}): {use}"
        return line
    if fused_wins:
        return (f"verdict: the supernet (tau {supernet_tau:.3f}) does NOT beat every equal-cost "
                f"baseline, but supernet+{prior} (tau {fused_tau:.3f}) does: search with it "
                f"({use})")
    best = max(better, key=better.get)
    return (f"verdict: the supernet (tau {supernet_tau:.3f}) does NOT beat every equal-cost "
            f"baseline; search with {best} instead (tau {better[best]:.3f}{_how(best)})")


def _how(baseline: str) -> str:
    """How to search with ``baseline`` in cellblock, as a clause of the verdict."""
    if baseline in ("params", "macs"):
        return ": no supernet or training needed, prefer the larger candidates within your budget"
    if baseline in ("synflow", "naswot"):
        return f": --evaluator proxy --objectives {baseline},macs"
    if baseline == "standalone_equal_cost":
        return ": --evaluator train with a short --epochs"
    return ""


def rank_table(result: Mapping[str, Any]) -> str:
    """The ranking report as a text table (method, Kendall tau, cost) and the verdict."""
    lines = [f"{'ranking by':<34} {'kendall_tau':>11} {'cost_s':>9}"]

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines.append(f"{'supernet':<34} {fmt(result['kendall_tau']):>11} {result['supernet_s']:>9.1f}")
    if result.get("fused"):
        f = result["fused"]
        lines.append(f"{'supernet + ' + f['prior'] + ' prior':<34} {fmt(f['kendall_tau']):>11} "
                     f"{f['cost_s']:>9.1f}")
    for name, b in (result.get("baselines") or {}).items():
        label = name if name != "standalone_equal_cost" else (
            f"stand-alone, {b['steps']} steps (equal cost)" if b.get("search_candidates") in (
                None, result["n"]) else
            f"stand-alone, {b['steps']} steps (= {b['search_candidates']} cand.)")
        lines.append(f"{label:<34} {fmt(b['kendall_tau']):>11} {b['cost_s']:>9.1f}")
    lines.append(f"{'noise ceiling (seed vs seed)':<34} {fmt(result['standalone_seed_tau']):>11} "
                 f"{result['standalone_s']:>9.1f}")
    lines.append(f"cost ratio (supernet / stand-alone of the {result['n']}): "
                 f"{fmt(result['cost_ratio'])}")
    if result.get("verdict"):
        lines.append(result["verdict"])
    return "\n".join(lines)


def tau_warning(result: Mapping[str, Any]) -> str | None:
    """A warning line when the Kendall tau is below :data:`TAU_WARNING` (or undefined).

    With a verdict (the baselines were ranked) it leaves what to search with to the verdict,
    which may still be the supernet: a weak ranking can beat every equal-cost alternative.
    """
    tau = result.get("kendall_tau")
    if tau is not None and tau >= TAU_WARNING:
        return None
    shown = "undefined" if tau is None else f"{tau:.3f}"
    line = f"warning: Kendall tau {shown} < {TAU_WARNING}: this supernet ranks children poorly; "
    if result.get("verdict"):
        return line + "training it longer usually helps; the verdict above says what to search with"
    return line + ("search by training candidates instead (--evaluator train), or train the "
                   "supernet longer or with another --sampling")
