"""Zero-cost proxies: scores of an untrained network from one minibatch (or no data).

Implemented as in the reference code of Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS" (ICLR 2021) and NAS-Bench-Suite-Zero (Krishnakumar et al., 2022):

* ``synflow``: sum over conv/linear weights of ``|w * dR/dw|`` where ``R`` is the sum of
  the outputs for an all-ones input, with every parameter replaced by its absolute
  value, in double precision, with BatchNorm layers removed (their ``bn=False`` copy).
  Needs no data.
* ``naswot`` (Mellor et al., ICML 2021): ``log|det K|`` of the binary-code kernel,
  ``K[i, j]`` = number of ReLU units on which inputs ``i`` and ``j`` agree (both active
  or both inactive), summed over every ``nn.ReLU``.
* ``jacob_cov``: ``-sum(log(v + k) + 1 / (v + k))``, ``k = 1e-5``, over the eigenvalues
  ``v`` of the correlation matrix of the per-input Jacobians ``d(sum of outputs)/dx``.
* ``grad_norm``: sum over conv/linear layers of the L2 norm of the cross-entropy gradient.
* ``snip``: sum over conv/linear weights of ``|w * dL/dw|`` (cross-entropy ``L``).

Data-dependent proxies run the network in training mode (BatchNorm uses batch
statistics), as the reference code does. Every proxy works on a deep copy, so the given
model's weights, buffers, gradients, dtype and mode are untouched. Higher is better.

As pipeline metrics (``objectives: synflow,macs``), proxies are computed right after
params/MACs, before cheap constraints are checked. The ``proxy`` evaluator (config key
``proxy``) makes a search training-free: it reports that proxy instead of training.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from cellblock.core.errors import ConfigError, EvaluationError
from cellblock.core.registry import Registry
from cellblock.evaluators.base import EvalContext, Evaluator, register_evaluator
from cellblock.evaluators.pipeline import METRIC_PROVIDERS

#: Images in the minibatch of data-dependent proxies in a run (NAS-Bench-Suite-Zero: 64).
PROXY_BATCH_SIZE = 64
JACOB_COV_K = 1e-5


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _scratch(model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """A deep copy of ``model`` (on ``device``) with no gradients, to be used and thrown away."""
    net = copy.deepcopy(model)
    if device is not None:
        net.to(device)
    for p in net.parameters():
        p.grad = None
        p.requires_grad_(True)
    return net


def synflow(model: nn.Module, input_shape: Sequence[int],
            device: torch.device | None = None) -> float:
    """SynFlow score of ``model`` for inputs of ``input_shape`` ``(C, H, W)``; needs no data.

    Computed on ``device`` (default: the model's).
    """
    net = _scratch(model, device)
    for name, module in list(net.named_modules()):
        if isinstance(module, _BatchNorm):  # the reference ``bn=False`` copy has no BN layers
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
        elif getattr(module, "inplace", False) is True:
            # without its BN, a pre-activation block's in-place ReLU would overwrite the input
            # its shortcut still needs
            module.inplace = False
    net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones(1, *input_shape, dtype=torch.float64, device=_model_device(net))
    net(x).sum().backward()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for layer in _weighted_layers(net):
            if layer.weight.grad is not None:
                total += (layer.weight * layer.weight.grad).abs().sum()
    return float(total)


def naswot(model: nn.Module, x: Tensor) -> float:
    """NASWOT score: log-determinant of the ReLU binary-code kernel of the batch ``x``.

    A singular kernel (e.g. two identical inputs, or no ReLU) gets ``-inf``.
    """
    net = _scratch(model, x.device).train()
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        nonlocal kernel
        code = (output.detach().reshape(n, -1) > 0).double()
        kernel = kernel + code @ code.t() + (1.0 - code) @ (1.0 - code).t()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


def jacob_cov(model: nn.Module, x: Tensor, y: Tensor | None = None) -> float:
    """Jacobian-covariance score of the batch ``x`` (``y`` is not used; kept for a uniform call).

    A network whose output does not depend on its input (constant Jacobians, no
    correlation defined) gets ``-inf``, the worst score.
    """
    net = _scratch(model, x.device).train()
    xg = x.detach().clone().requires_grad_(True)
    out = net(xg)
    (jac,) = torch.autograd.grad(out, xg, torch.ones_like(out))
    corr = torch.corrcoef(jac.reshape(x.shape[0], -1).double())
    if not bool(torch.isfinite(corr).all()):
        return -math.inf
    eig = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K)).sum())


def _loss_grads(model: nn.Module, x: Tensor, y: Tensor) -> nn.Module:
    net = _scratch(model, x.device).train()
    F.cross_entropy(net(x), y).backward()
    return net


def grad_norm(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Sum over conv/linear layers of the L2 norm of the cross-entropy weight gradient."""
    net = _loss_grads(model, x, y)
    total = sum(
        float(m.weight.grad.norm()) for m in _weighted_layers(net) if m.weight.grad is not None)
    return float(total)


def snip(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """SNIP saliency: sum over conv/linear weights of ``|w * dL/dw|`` (cross-entropy)."""
    net = _loss_grads(model, x, y)
    with torch.no_grad():
        total = sum(float((m.weight * m.weight.grad).abs().sum())
                    for m in _weighted_layers(net) if m.weight.grad is not None)
    return float(total)


# ---- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proxy:
    """A registered proxy: ``fn`` and what it needs.

    Attributes:
        name: Registry name (also the metric name).
        fn: ``fn(model, input_shape)`` when ``needs_data`` is False, else ``fn(model, x, y)``.
        needs_data: Whether it uses a minibatch of inputs (and labels).
    """

    name: str
    fn: Callable[..., float]
    needs_data: bool

    def __call__(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                 input_shape: Sequence[int] | None = None,
                 device: torch.device | None = None) -> float:
        """Score ``model`` on the batch ``(x, y)`` (on its device).

        Data-free proxies use only ``input_shape`` (default: the batch's) and ``device``.
        """
        if not self.needs_data:
            shape = tuple(input_shape) if input_shape is not None else (
                tuple(x.shape[1:]) if x is not None else None)
            if shape is None:
                raise ConfigError(
                    f"proxy {self.name} needs input_shape or a batch x to know the shape")
            return self.fn(model, shape, device)
        if x is None or y is None:
            raise ConfigError(f"proxy {self.name} needs a minibatch x and labels y")
        return self.fn(model, x, y)


PROXIES: Registry[Proxy] = Registry("proxy")


def register_proxy(name: str, fn: Callable[..., float], needs_data: bool) -> Proxy:
    """Register ``fn`` as the proxy ``name`` (and as a pipeline metric provider of that name)."""
    proxy = Proxy(name, fn, needs_data)
    PROXIES.register(name, proxy)
    METRIC_PROVIDERS.register(name, lambda model, ctx: proxy_metric(name, model, ctx))
    return proxy


register_proxy("synflow", synflow, needs_data=False)
register_proxy("naswot", lambda model, x, y: naswot(model, x), needs_data=True)
register_proxy("jacob_cov", jacob_cov, needs_data=True)
register_proxy("grad_norm", grad_norm, needs_data=True)
register_proxy("snip", snip, needs_data=True)


# ---- use in a run -----------------------------------------------------------------------------
_BATCHES: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], tuple[Tensor, Tensor]]] = (
    weakref.WeakKeyDictionary()
)
_SCORES: weakref.WeakKeyDictionary[nn.Module, dict[str, float]] = weakref.WeakKeyDictionary()


def proxy_batch(ctx: EvalContext) -> tuple[Tensor, Tensor]:
    """The run's fixed proxy minibatch: :data:`PROXY_BATCH_SIZE` train images chosen by the seed.

    Raises:
        EvaluationError: if the run has no dataset loaded.
    """
    data = ctx.data
    if data is None:
        raise EvaluationError(
            "data-dependent proxies need the dataset; use an evaluator that loads it")
    key = (int(ctx.config.seed), str(ctx.device))
    cache = _BATCHES.setdefault(data, {})
    if key not in cache:
        gen = torch.Generator().manual_seed(key[0])
        idx = torch.randperm(len(data.y_train), generator=gen)[:PROXY_BATCH_SIZE]
        cache[key] = (data.x_train[idx].to(ctx.device), data.y_train[idx].to(ctx.device))
    return cache[key]


def proxy_metric(name: str, model: nn.Module, ctx: EvalContext) -> float:
    """Proxy ``name`` of ``model`` in a run, on ``ctx.device`` (cached per model object).

    The cache lets the pipeline (proxy as objective) and the ``proxy`` evaluator share one
    computation; it holds only scores of untrained models as both run before training.
    """
    scores = _SCORES.setdefault(model, {})
    if name not in scores:
        proxy = PROXIES.get(name)
        if proxy.needs_data:
            x, y = proxy_batch(ctx)
            scores[name] = proxy(model, x, y)
        else:
            shape = ctx.space.input_shape
            scores[name] = proxy(model, input_shape=shape, device=ctx.device)
    return scores[name]


@register_evaluator("proxy")
class ProxyEvaluator(Evaluator):
    """Training-free evaluation: reports the proxy named by the config key ``proxy``.

    It reports no ``accuracy``, so objectives and constraints must not use it
    (e.g. ``objectives: synflow,macs`` with ``proxy: synflow``).

    Raises:
        ConfigError: at construction, for an unknown proxy or objectives naming accuracy.
    """

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.proxy = cfg.proxy
        PROXIES.get(self.proxy)
        wanted = [*cfg.objectives, *(str(c) for c in cfg.constraints)]
        if any(w.strip().startswith("accuracy") for w in wanted):
            raise ConfigError(
                f"the proxy evaluator does not train, so there is no accuracy; use the proxy as an "
                f"objective instead, e.g. objectives: {self.proxy},macs"
            )

    def evaluate(self, model: nn.Module, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        return {self.proxy: proxy_metric(self.proxy, model, self.ctx)}
