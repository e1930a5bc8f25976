"""Latent-space diagnostics: nearest-neighbour distances and the *gap score*.

The gap score of generated codes G against training codes Y is

    gap(G) = mean_{g in G} 1[ min_i |g - y_i| > q_99 ],
    q_99   = 99th percentile of { min_{j != i} |y_i - y_j| : y_i in Y },

the fraction of generated codes that fall into a gap of the training distribution: farther from
every training code than 99% of the training codes are from their nearest neighbour. Decoded, such
codes are the blurry mixtures of digits that naive latent sampling produces.
"""

from __future__ import annotations

import torch

from ae_ot.checks import UserInputError, require_in_interval

__all__ = ["nearest_neighbours", "nearest_neighbour_distances", "gap_threshold", "gap_score", "copy_fraction",
           "code_scores"]


def nearest_neighbours(points: torch.Tensor, queries: torch.Tensor, k: int,
                       chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest ``points`` [N, d] of each query [M, d]: distances [M, k] (ascending) and
    indices [M, k]. Tiled over queries (at most ``chunk x N`` distances at once). A query that is
    itself one of the points finds itself first, at distance 0.

    Examples
    --------
    >>> import torch
    >>> distances, indices = nearest_neighbours(torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([[0.9]]), k=2)
    >>> indices.tolist()
    [[1, 0]]
    """
    if points.dim() != 2 or queries.dim() != 2 or points.shape[1] != queries.shape[1]:
        raise UserInputError(f"points must be [N, d] and queries [M, d] with the same d, got "
                             f"{tuple(points.shape)} and {tuple(queries.shape)}")
    if not 1 <= k <= points.shape[0]:
        raise UserInputError(f"k must be in [1, N={points.shape[0]}], got {k}")
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        block = queries[start:start + chunk]
        _, i = torch.cdist(block, points).topk(k, dim=1, largest=False)
        # cdist's matrix-product formula loses ~sqrt(eps)|x| to cancellation; recompute the k
        # distances directly so that an exact copy reads as 0.
        dists.append((block[:, None, :] - points[i]).norm(dim=2))
        idxs.append(i)
    dists, idxs = torch.cat(dists), torch.cat(idxs)
    order = dists.argsort(dim=1, stable=True)
    return dists.gather(1, order), idxs.gather(1, order)


def nearest_neighbour_distances(points: torch.Tensor, queries: torch.Tensor | None = None,
                                chunk: int = 4096) -> torch.Tensor:
    """Distance [M] from each query [M, d] to its nearest point of ``points`` [N, d].

    With ``queries=None``: the leave-one-out nearest-neighbour distance [N] of each point.
    Tiled over queries, so at most ``chunk x N`` distances are held at once.

    Examples
    --------
    >>> import torch
    >>> nearest_neighbour_distances(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.25], [3.0]])).tolist()
    [0.25, 2.0]
    """
    if queries is not None:
        return nearest_neighbours(points, queries, 1, chunk)[0][:, 0]
    # Leave one out: of each point's two nearest, the first that is not the point itself. A
    # duplicate of the point may come first instead; both are at distance 0 then.
    dists, idxs = nearest_neighbours(points, points, min(2, points.shape[0]), chunk)
    if dists.shape[1] < 2:
        return torch.full_like(dists[:, 0], float("inf"))
    itself = idxs[:, 0] == torch.arange(points.shape[0], device=points.device)
    return torch.where(itself, dists[:, 1], dists[:, 0])


def gap_threshold(train_codes: torch.Tensor, quantile: float = 0.99) -> float:
    """q-th quantile of the training codes' leave-one-out nearest-neighbour distances.

    Examples
    --------
    >>> import torch
    >>> gap_threshold(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), quantile=0.5)
    1.0
    """
    require_in_interval(0, 1, high_closed=True, quantile=quantile)
    if train_codes.dim() != 2 or train_codes.shape[0] < 2:
        # one code has no neighbour: an infinite threshold would make every gap score 0
        raise UserInputError(f"the gap threshold needs at least 2 training codes [N, d], got shape "
                             f"{tuple(train_codes.shape)}")
    return torch.quantile(nearest_neighbour_distances(train_codes), quantile).item()


def gap_score(generated: torch.Tensor, train_codes: torch.Tensor, quantile: float = 0.99,
              threshold: float | None = None) -> float:
    """Fraction of ``generated`` codes farther from every training code than the threshold.

    Examples
    --------
    >>> import torch
    >>> train = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> gap_score(torch.tensor([[0.5], [10.0]]), train, threshold=1.0)
    0.5
    """
    if generated.dim() != 2 or generated.shape[0] == 0:
        raise UserInputError(f"generated codes must be a non-empty [M, d] tensor, got shape {tuple(generated.shape)}")
    threshold = gap_threshold(train_codes, quantile) if threshold is None else threshold
    return (nearest_neighbour_distances(train_codes, generated) > threshold).float().mean().item()


def copy_fraction(codes: torch.Tensor, train_codes: torch.Tensor, tolerance: float = 1e-4) -> float:
    """The fraction of generated ``codes`` [M, d] nearer than ``tolerance`` to a training code of
    ``train_codes`` [N, d]: the copies of training codes a latent sampler makes.

    Examples
    --------
    >>> import torch
    >>> train = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    >>> copy_fraction(torch.tensor([[0.0, 0.0], [0.5, 0.5]]), train)
    0.5
    """
    return (nearest_neighbour_distances(train_codes, codes) < tolerance).float().mean().item()


def code_scores(codes: torch.Tensor, train_codes: torch.Tensor, reference_codes: torch.Tensor, threshold: float,
                reference_median_nn: float, copy_tolerance: float) -> dict:
    """The latent scores of generated ``codes`` [M, d] against the training codes [N, d].

    Returns ``gap_score`` (:func:`gap_score` against ``reference_codes`` with ``threshold``),
    ``copies_of_training_codes`` (the fraction of codes nearer than ``copy_tolerance`` to a training
    code) and ``relative_nn_distance`` (the median distance to the nearest reference code over
    ``reference_median_nn``, the reference codes' own median nearest-neighbour distance: 0 for
    copies, about 1 for codes as far from the training codes as those are from each other).
    """
    nearest_reference = nearest_neighbour_distances(reference_codes, codes)
    return {"gap_score": gap_score(codes, reference_codes, threshold=threshold),
            "copies_of_training_codes": copy_fraction(codes, train_codes, copy_tolerance),
            "relative_nn_distance": nearest_reference.median().item() / max(reference_median_nn, 1e-12)}
