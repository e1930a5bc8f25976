"""The extended semi-discrete OT map, with singular-boundary detection.

The plain semi-discrete map T(x) = y_{i(x)} is piecewise constant: it only ever returns training
targets. AE-OT (An et al., ICLR 2020) extends it so that it produces *new* points inside a mode,
while it never produces points *between* modes:

For a source point x let s_m = <x, y_{i_m}> + h_{i_m} be its top-k scores, s_1 >= s_2 >= ...,
with winner i = i_1. The supporting plane of the Brenier potential on cell j has the normal
n_j = (y_j, -1) in R^{d+1}; the angle between n_i and n_j,

    theta_ij = arccos( (<y_i, y_j> + 1) / (sqrt(|y_i|^2 + 1) sqrt(|y_j|^2 + 1)) ),

is small when y_i and y_j are close (the facet between W_i and W_j lies inside one mode) and large
when they are far apart (the facet is a *singular* boundary, across which the target support has
a gap). The generated point is

    T_ext(x) = sum_m w_m y_{i_m} / sum_m w_m,
    w_1 = 1,
    w_m = max(0, 1 - dist_m / r(x))   if theta_{i i_m} < angle_threshold, else 0     (m >= 2),
    dist_m = (s_1 - s_m) / |y_i - y_{i_m}|,
    r(x) = radius * max_{m >= 2} dist_m,

where dist_m is the Euclidean distance from x to the hyperplane that carries the facet between
W_i and W_{i_m}, and r(x) is the width of the band beside a regular facet in which the map
interpolates, a fraction ``radius`` of the distance to the farthest of the k - 1 runner-up
facets. Measuring the band relative to the cell's own scale keeps the rule free of units: power
cells of one diagram differ in size by orders of magnitude (the cells at the rim of a cluster
reach far into the empty part of the box). Properties:

* Far from every regular facet (relative to the cell's scale) T_ext(x) = y_i: the plain map.
* On a regular facet between i and j (s_1 = s_2) both weights are 1 whichever side x is on, so
  the two codes blend evenly there; moving into cell i the weight of y_j decays linearly to 0.
* A singular neighbour always gets weight 0: generated points never mix two modes, and the map
  jumps across singular boundaries instead of filling the gap between modes.

``radius=0`` (or ``k=1``) gives the plain map.
"""

from __future__ import annotations

import math

import torch

from ae_ot.checks import UserInputError

__all__ = ["normal_angles", "extended_map", "ExtendedMapStats"]


def normal_angles(targets: torch.Tensor, winners: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Angles (radians) between the normals (y_i, -1) and (y_j, -1) of supporting planes.

    Parameters
    ----------
    targets : [N, d]
    winners : [M] long, indices i
    others : [M, K] long, indices j

    Returns
    -------
    [M, K] angles in [0, pi].

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    >>> normal_angles(y, torch.tensor([0]), torch.tensor([1])).round(decimals=4).tolist()
    [[0.7853999733924866]]
    """
    yi = targets[winners]                                   # [M, d]
    yj = targets[others]                                    # [M, K, d]
    dot = (yj * yi[:, None, :]).sum(-1) + 1.0               # <(y_i,-1), (y_j,-1)>
    norm_i = torch.sqrt((yi * yi).sum(-1) + 1.0)[:, None]
    norm_j = torch.sqrt((yj * yj).sum(-1) + 1.0)
    return torch.arccos((dot / (norm_i * norm_j)).clamp(-1.0, 1.0))


class ExtendedMapStats(dict):
    """Diagnostics of one call of :func:`extended_map` (fractions over the M points)."""


def extended_map(scores: torch.Tensor, indices: torch.Tensor, targets: torch.Tensor, *,
                 angle_threshold: float, radius: float, return_stats: bool = False):
    """Apply the extended map given the top-k scores of M source points.

    Parameters
    ----------
    scores : [M, K] float
        Top-k values of <x, y_i> + h_i, sorted descending (as returned by ``SemiDiscreteOT.topk``).
    indices : [M, K] long
        The matching target indices.
    targets : [N, d]
    angle_threshold : float
        In radians: runner-ups whose normal makes a larger angle with the winner's are across a
        singular boundary and never mixed in.
    radius : float
        Width of the interpolation band beside a regular facet, as a fraction of the distance from
        x to the farthest of its k - 1 runner-up facets.
    return_stats : bool, default False
        Also return :class:`ExtendedMapStats`: ``plain`` (fraction of points mapped to a target
        exactly), ``near_singular`` (fraction whose runner-up is across a singular boundary).

    Returns
    -------
    [M, d] generated points (and the stats when asked).
    """
    if scores.shape != indices.shape or scores.dim() != 2:
        raise UserInputError(f"scores {tuple(scores.shape)} and indices {tuple(indices.shape)} must be the same [M, K]")
    if radius < 0 or not math.isfinite(radius):
        raise UserInputError(f"radius must be a finite number >= 0, got {radius}")
    if not 0 <= angle_threshold <= math.pi:
        raise UserInputError(f"angle_threshold must be in [0, pi] radians, got {angle_threshold}")
    winners = indices[:, 0]
    y_win = targets[winners]
    if indices.shape[1] == 1 or radius == 0:
        out = y_win.clone()
        stats = ExtendedMapStats(plain=1.0, near_singular=float("nan"))
        return (out, stats) if return_stats else out
    others = indices[:, 1:]
    gaps = (scores[:, :1] - scores[:, 1:]).clamp_min(0)                          # s_1 - s_m >= 0
    separation = (targets[others] - y_win[:, None, :]).norm(dim=-1).clamp_min(1e-12)
    distance = gaps / separation                                                  # to the facet's plane
    regular = normal_angles(targets, winners, others) < angle_threshold
    band = radius * distance.amax(1, keepdim=True).clamp_min(1e-12)              # r(x)
    weights = torch.where(regular, (1.0 - distance / band).clamp_min(0), torch.zeros_like(distance))
    numerator = y_win + (weights[..., None] * targets[others]).sum(1)
    out = numerator / (1.0 + weights.sum(1, keepdim=True))
    if not return_stats:
        return out
    stats = ExtendedMapStats(
        plain=(weights.sum(1) == 0).float().mean().item(),
        near_singular=(~regular[:, 0]).float().mean().item(),
    )
    return out, stats
