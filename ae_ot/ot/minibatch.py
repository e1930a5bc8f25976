"""Minibatch optimal-transport losses: exact minibatch Wasserstein (Fatras et al., "Learning with
minibatch Wasserstein: asymptotic and gradient properties", AISTATS 2020) and the debiased Sinkhorn
divergence (Feydy et al., "Interpolating between optimal transport and MMD using Sinkhorn
divergences", AISTATS 2019). Pure torch + scipy (+ GeomLoss for Sinkhorn); never imports Lightning.

Exact minibatch OT
------------------
For point clouds ``x`` [n, D] and ``y`` [n', D] with uniform weights, draw ``k`` pairs of
size-``m`` minibatches (indices without replacement inside a minibatch, pairs independent), solve
the exact OT problem between each pair and average:

    h_k(x, y) = 1/k * sum_{l=1..k} W(x[I_l], y[J_l]),     W(a, b) = min_sigma 1/m sum_i c(a_i, b_sigma(i)).

With uniform weights and equal sizes the OT problem is an assignment problem (a permutation is an
optimal plan, Birkhoff), solved exactly by ``scipy.optimize.linear_sum_assignment`` on the
squared Euclidean cost ``c(a, b) = |a - b|^2``. ``h_k`` is the *incomplete U-statistic*: its
expectation is the complete average over all C(n, m) * C(n', m) minibatch pairs
(:func:`complete_minibatch_wasserstein`). The assignment is found on detached costs; the returned
loss is the mean cost of the matched pairs, so gradients flow through the matched points
(the envelope theorem: that is the gradient of the OT value).

The minibatch loss is biased: ``h(x, x) > 0`` for ``m < n`` (two random minibatches of the same
cloud differ). The debiased form ``h(x, y) - (h(x, x) + h(y, y)) / 2`` removes that offset.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ae_ot.checks import UserInputError

__all__ = [
    "squared_euclidean_cost",
    "assignment",
    "exact_ot_equal_size",
    "draw_minibatch_pairs",
    "minibatch_wasserstein",
    "debiased_minibatch_wasserstein",
    "complete_minibatch_wasserstein",
    "minibatch_transport_plan",
    "complete_minibatch_transport_plan",
    "sinkhorn_divergence",
    "check_minibatch_args",
]

#: beyond this many minibatch pairs the complete (exhaustive) estimators refuse to run
MAX_COMPLETE_PAIRS = 200_000


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _is_positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def check_minibatch_args(m, k=1, n: int | None = None, n_other: int | None = None) -> None:
    """Raise ``ValueError`` unless ``m`` and ``k`` are positive integers and ``m`` <= both sizes.

    Examples
    --------
    >>> check_minibatch_args(4, k=2, n=10, n_other=8)
    >>> try:
    ...     check_minibatch_args(20, n=10)
    ... except ValueError:
    ...     print("m larger than the point set")
    m larger than the point set
    """
    if not _is_positive_int(m):
        raise UserInputError(f"m (minibatch size) must be a positive integer, got {m!r}")
    if not _is_positive_int(k):
        raise UserInputError(f"k (number of minibatch pairs) must be a positive integer, got {k!r}")
    for name, size in (("x", n), ("y", n_other)):
        if size is not None and m > size:
            raise UserInputError(
                f"m={m} is larger than the number of points in {name} ({size}); "
                f"use m <= {size} (or a larger batch)"
            )


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() < 1 or x.shape[0] == 0:
        raise UserInputError(f"{name} must hold at least one point, got shape {tuple(x.shape)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        # Else scipy's assignment or GeomLoss fails deep inside ("arange: cannot compute length").
        bad = (~torch.isfinite(x.detach())).reshape(x.shape[0], -1).any(1).nonzero().flatten()
        raise UserInputError(f"{name} contains NaN or Inf in {bad.numel()} point(s), first at row {int(bad[0])}; "
                             f"if {name} comes from a model in training, the model diverged (lower its learning rate)")
    return x.reshape(x.shape[0], -1) if x.dim() != 2 else x


# ---------------------------------------------------------------------------------------------
# Exact OT between two equal-size uniform clouds
# ---------------------------------------------------------------------------------------------
def squared_euclidean_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``C[i, j] = |x_i - y_j|^2`` for x [n, D], y [m, D] (images are flattened), differentiable.

    Examples
    --------
    >>> import torch
    >>> squared_euclidean_cost(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])).tolist()
    [[25.0]]
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise UserInputError(f"x and y have different dimensions: {x.shape[1]} vs {y.shape[1]}")
    cost = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return cost.clamp_min(0.0)


def assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal assignment (rows, cols) of a square cost matrix, exact (scipy's Hungarian variant).

    Examples
    --------
    >>> import torch
    >>> rows, cols = assignment(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    >>> cols.tolist()
    [1, 0]
    """
    if cost.dim() != 2:
        raise UserInputError(f"cost must be a matrix, got shape {tuple(cost.shape)}")
    if cost.shape[0] != cost.shape[1]:
        raise UserInputError(
            f"the exact minibatch OT solves an assignment problem and needs two minibatches of the "
            f"same size with uniform weights, got sizes {cost.shape[0]} and {cost.shape[1]}; "
            "draw equal-size minibatches (same m for both sides)"
        )
    rows, cols = linear_sum_assignment(cost.detach().double().cpu().numpy())
    return torch.as_tensor(rows, device=cost.device), torch.as_tensor(cols, device=cost.device)


def exact_ot_equal_size(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact W (squared Euclidean cost, uniform weights) between x [m, D] and y [m, D].

    Returns ``(value, cols)``: value = mean_i |x_i - y_cols[i]|^2 (differentiable through the
    matched pairs) and the optimal permutation ``cols``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0]])
    >>> cost, plan = exact_ot_equal_size(x, x + 1.0)
    >>> float(cost)
    1.0
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[0] != y.shape[0]:
        raise UserInputError(
            f"the exact minibatch OT solves an assignment problem and needs two minibatches of the "
            f"same size with uniform weights, got sizes {x.shape[0]} and {y.shape[0]}; "
            "draw equal-size minibatches (same m for both sides)"
        )
    with torch.no_grad():
        rows, cols = assignment(squared_euclidean_cost(x, y))
    value = ((x[rows] - y[cols]) ** 2).sum(1).mean()
    return value, cols


# ---------------------------------------------------------------------------------------------
# Minibatch estimators
# ---------------------------------------------------------------------------------------------
def draw_minibatch_pairs(n: int, n_other: int, m: int, k: int, generator: torch.Generator | None = None,
                         device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` independent pairs (I, J) of index sets of size ``m`` drawn without replacement from
    ``range(n)`` and ``range(n_other)`` (each drawn uniformly among all size-m subsets).

    Examples
    --------
    >>> import torch
    >>> pairs = draw_minibatch_pairs(10, 8, m=4, k=3, generator=torch.Generator().manual_seed(0))
    >>> len(pairs), pairs[0][0].shape
    (3, torch.Size([4]))
    """
    check_minibatch_args(m, k, n, n_other)
    pairs = []
    for _ in range(k):
        i = torch.randperm(n, generator=generator)[:m]
        j = torch.randperm(n_other, generator=generator)[:m]
        pairs.append((i.to(device), j.to(device)))
    return pairs


def minibatch_wasserstein(x: torch.Tensor, y: torch.Tensor, m: int, k: int = 1,
                          generator: torch.Generator | None = None, return_pairs: bool = False):
    """Incomplete minibatch Wasserstein estimator h_k(x, y) (squared Euclidean cost, see module doc).

    x [n, ...] and y [n', ...] (flattened to vectors); ``m`` <= n, n'; ``k`` pairs averaged.
    Differentiable in x and y through the matched pairs. With ``return_pairs`` also returns the
    list of ``(I, J, cols)`` index tensors (pair l matched x[I][i] with y[J][cols[i]]).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g) + 3.0
    >>> bool(minibatch_wasserstein(x, y, m=8, k=4, generator=g) > 10)
    True
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    pairs = draw_minibatch_pairs(x.shape[0], y.shape[0], m, k, generator, device=x.device)
    values, matched = [], []
    for i, j in pairs:
        value, cols = exact_ot_equal_size(x[i], y[j])
        values.append(value)
        matched.append((i, j, cols))
    loss = torch.stack(values).mean()
    return (loss, matched) if return_pairs else loss


def debiased_minibatch_wasserstein(x: torch.Tensor, y: torch.Tensor, m: int, k: int = 1,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """h_k(x, y) - (h_k(x, x) + h_k(y, y)) / 2, each term with its own independent draws.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g) + 3.0
    >>> bool(debiased_minibatch_wasserstein(x, y, m=8, k=4, generator=g) > 5)
    True
    """
    return (minibatch_wasserstein(x, y, m, k, generator)
            - 0.5 * minibatch_wasserstein(x, x, m, k, generator)
            - 0.5 * minibatch_wasserstein(y, y, m, k, generator))


def _all_pairs(n: int, n_other: int, m: int):
    check_minibatch_args(m, 1, n, n_other)
    count = math.comb(n, m) * math.comb(n_other, m)
    if count > MAX_COMPLETE_PAIRS:
        raise UserInputError(
            f"the complete estimator averages over C({n},{m}) * C({n_other},{m}) = {count} minibatch "
            f"pairs (limit {MAX_COMPLETE_PAIRS}); use the incomplete estimator (k random pairs) instead"
        )
    subsets_x = list(itertools.combinations(range(n), m))
    subsets_y = list(itertools.combinations(range(n_other), m))
    return subsets_x, subsets_y


@torch.no_grad()
def complete_minibatch_wasserstein(x: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """The complete U-statistic: the average of exact W over *all* pairs of size-m subsets.
    Exhaustive, for tiny point sets only (tests and oracles).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0], [2.0]])
    >>> float(complete_minibatch_wasserstein(x, x + 1.0, m=3))
    1.0
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    subsets_x, subsets_y = _all_pairs(x.shape[0], y.shape[0], m)
    cost = squared_euclidean_cost(x, y).double().cpu().numpy()
    total = 0.0
    for i in subsets_x:
        for j in subsets_y:
            sub = cost[np.ix_(i, j)]
            r, c = linear_sum_assignment(sub)
            total += sub[r, c].mean()
    return torch.tensor(total / (len(subsets_x) * len(subsets_y)), dtype=x.dtype)


def _scatter_plan(plan: torch.Tensor, i: torch.Tensor, j: torch.Tensor, cols: torch.Tensor, m: int) -> None:
    plan[i, j[cols]] += 1.0 / m


@torch.no_grad()
def minibatch_transport_plan(x: torch.Tensor, y: torch.Tensor, m: int, k: int = 1,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """The averaged minibatch transport plan Pi_k [n, n'] of the incomplete estimator: each pair's
    optimal plan (a permutation with mass 1/m per matched pair) placed at (I, J), averaged over k.

    Its marginals equal the uniform weights 1/n, 1/n' *in expectation*; the complete plan
    (:func:`complete_minibatch_transport_plan`) has them exactly.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> plan = minibatch_transport_plan(torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g), m=3, k=5, generator=g)
    >>> plan.shape, round(float(plan.sum()), 6)
    (torch.Size([6, 6]), 1.0)
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    _, matched = minibatch_wasserstein(x, y, m, k, generator, return_pairs=True)
    plan = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64, device=x.device)
    for i, j, cols in matched:
        _scatter_plan(plan, i, j, cols, m)
    return plan / k


@torch.no_grad()
def complete_minibatch_transport_plan(x: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """The averaged plan over *all* pairs of size-m subsets [n, n'] (tiny point sets only);
    its row sums are exactly 1/n and its column sums exactly 1/n'.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0], [2.0]])
    >>> complete_minibatch_transport_plan(x, x, m=3).diagonal().tolist()
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    subsets_x, subsets_y = _all_pairs(x.shape[0], y.shape[0], m)
    cost = squared_euclidean_cost(x, y).double().cpu().numpy()
    plan = np.zeros((x.shape[0], y.shape[0]))
    for i in subsets_x:
        for j in subsets_y:
            r, c = linear_sum_assignment(cost[np.ix_(i, j)])
            plan[np.asarray(i)[r], np.asarray(j)[c]] += 1.0 / m
    return torch.from_numpy(plan / (len(subsets_x) * len(subsets_y)))


# ---------------------------------------------------------------------------------------------
# Debiased Sinkhorn divergence (GeomLoss)
# ---------------------------------------------------------------------------------------------
def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, blur: float = 1.0, p: int = 2,
                        scaling: float = 0.9, backend: str = "tensorized") -> torch.Tensor:
    """Debiased Sinkhorn divergence S_eps(x, y) = OT_eps(x, y) - OT_eps(x, x)/2 - OT_eps(y, y)/2
    between uniform clouds x [n, ...] and y [n', ...] (flattened), with GeomLoss' ``SamplesLoss``.

    Cost ``|a - b|^p / p``; ``blur`` = eps^(1/p) is the length scale below which the entropic
    blur hides detail. ``backend``: "tensorized" (dense n x n' matrices; small batches, CPU) or
    "online" (KeOps, never stores the matrix; large batches on GPU), or "multiscale"/"auto".

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):   # pykeops may print a note on import
    ...     value = sinkhorn_divergence(x, x)
    >>> round(float(value), 4)
    0.0
    """
    if not isinstance(blur, (int, float)) or isinstance(blur, bool) or blur <= 0:
        raise UserInputError(f"blur must be a positive number, got {blur!r}")
    if backend not in ("tensorized", "online", "multiscale", "auto"):
        raise UserInputError(f"backend must be 'tensorized', 'online', 'multiscale' or 'auto', got {backend!r}")
    from geomloss import SamplesLoss  # imported lazily: it pulls pykeops

    x, y = _flat(x, "x"), _flat(y, "y")
    loss = SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, debias=True, backend=backend)
    return loss(x.contiguous(), y.contiguous())
