"""Identical targets merged into one: a semi-discrete problem needs distinct targets.

Two equal targets y_i = y_j have equal scores <x, y_i> + h_i and <x, y_j> + h_j up to their heights,
so one of their power cells is empty whatever the heights: no solution gives both their weight. The
problem with the two merged into one target of weight nu_i + nu_j has the same transport map.
"""

from __future__ import annotations

import torch

__all__ = ["merge_duplicates"]


def merge_duplicates(targets: torch.Tensor, weights: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per distinct row of ``targets``, in order of first occurrence, with the summed weight.

    Parameters
    ----------
    targets : tensor [N, d]
    weights : tensor [N], optional
        Target masses (uniform 1 / N when omitted).

    Returns
    -------
    unique : tensor [M, d]
        The distinct rows (``targets`` itself when there is no duplicate, M = N).
    merged_weights : tensor [M] float64
        The sum of the weights of each distinct row's copies.
    index : tensor [N] int64
        The row of ``unique`` that every input row was merged into.

    Examples
    --------
    >>> import torch
    >>> unique, weights, index = merge_duplicates(torch.tensor([[0.0], [1.0], [0.0]]))
    >>> unique.flatten().tolist(), weights.tolist(), index.tolist()
    ([0.0, 1.0], [0.6666666666666666, 0.3333333333333333], [0, 1, 0])
    """
    n = targets.shape[0]
    if weights is None:
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64, device=targets.device)
    weights = weights.double()
    unique, inverse = torch.unique(targets, dim=0, return_inverse=True)
    if unique.shape[0] == n:
        return targets, weights, torch.arange(n, device=targets.device)
    # torch.unique sorts the rows; keep the order of first occurrence instead.
    first = torch.full((unique.shape[0],), n, dtype=torch.long, device=targets.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=targets.device), reduce="amin")
    order = torch.argsort(first)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    index = position[inverse]
    merged_weights = torch.zeros(unique.shape[0], dtype=torch.float64, device=targets.device)
    merged_weights.index_add_(0, index, weights)
    return targets[first[order]], merged_weights, index
