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

from ae_ot.checks import UserInputError

__all__ = ["nearest_neighbour_distances", "gap_threshold", "gap_score"]


def nearest_neighbour_distances(points: torch.Tensor, queries: torch.Tensor | None = None,
                                chunk: int = 4096) -> torch.Tensor:
    """Distance [M] from each query [M, d] to its nearest point of ``points`` [N, d].

    With ``queries=None``: the leave-one-out nearest-neighbour distance [N] of each point.
    Tiled over queries, so at most ``chunk x N`` distances are held at once.
    """
    leave_one_out = queries is None
    queries = points if leave_one_out else queries
    if queries.shape[-1] != points.shape[-1]:
        raise UserInputError(f"queries have dimension {queries.shape[-1]} but points {points.shape[-1]}")
    out = []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start:start + chunk], points)
        if leave_one_out:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + start] = float("inf")
        # cdist's matrix-product formula loses ~sqrt(eps)|x| to cancellation; recompute the
        # distance to the nearest candidate directly so that an exact copy reads as 0.
        nearest = d.argmin(1)
        out.append((queries[start:start + chunk] - points[nearest]).norm(dim=1))
    return torch.cat(out)


def gap_threshold(train_codes: torch.Tensor, quantile: float = 0.99) -> float:
    """q-th quantile of the training codes' leave-one-out nearest-neighbour distances."""
    return torch.quantile(nearest_neighbour_distances(train_codes), quantile).item()


def gap_score(generated: torch.Tensor, train_codes: torch.Tensor, quantile: float = 0.99,
              threshold: float | None = None) -> float:
    """Fraction of ``generated`` codes farther from every training code than the threshold."""
    threshold = gap_threshold(train_codes, quantile) if threshold is None else threshold
    return (nearest_neighbour_distances(train_codes, generated) > threshold).float().mean().item()
