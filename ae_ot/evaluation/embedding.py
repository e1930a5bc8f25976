"""A 2-D UMAP picture of latent codes, with generated codes placed into it.

:class:`CodeEmbedding` fits UMAP (McInnes, Healy and Melville, 2018) on reference codes Y [N, d]
and places other codes into the fitted picture. Two parts are done here, in torch, instead of by
umap-learn:

* the k-nearest-neighbour graph of Y is computed *exactly* (tiled ``cdist``) and handed to UMAP as
  ``precomputed_knn``. umap-learn would otherwise build it with pynndescent (approximate) for
  N >= 4,096, and pynndescent's numba kernels compile anew in every process, which costs more
  than the exact search at the sizes this module serves (timings: docs/benchmarks.md);
* a new code x is placed at the weighted mean of the 2-D positions of its k nearest reference
  codes, with UMAP's membership weights for new points,

      w_j = exp(-|x - y_(j)| / sigma),   sigma such that sum_j w_j = log2(k),

  which is how umap-learn's ``transform`` initialises a new point (``smooth_knn_dist`` with local
  connectivity 0, then ``init_graph_transform``), without its refinement epochs. A code in a gap
  between two modes therefore lands between their clusters in the picture, where it belongs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.latent import nearest_neighbours

__all__ = ["membership_weights", "CodeEmbedding"]


def membership_weights(dists: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """UMAP's membership weights of a new point [M, k]: exp(-d_j / sigma) with sigma found by
    bisection such that each row sums to log2(k) (all ones when k = 1)."""
    k = dists.shape[1]
    d = dists.double()
    if k == 1:
        return torch.ones_like(d)
    target = math.log2(k)
    # sum_j exp(-d_j / sigma) increases with sigma from 0 (or the count of zero distances) to k.
    low = torch.zeros(d.shape[0], 1, dtype=d.dtype)
    high = torch.full_like(low, float(d.max().clamp_min(1e-12)) * 1e3)
    for _ in range(iterations):
        mid = (low + high) / 2
        total = torch.exp(-d / mid).sum(dim=1, keepdim=True)
        too_big = total > target
        high = torch.where(too_big, mid, high)
        low = torch.where(too_big, low, mid)
    return torch.exp(-d / high)


class CodeEmbedding:
    """UMAP of reference codes, and the placement of new codes into it (module docstring).

    Parameters
    ----------
    codes : tensor [N, d]
        Reference codes (N > n_neighbors).
    n_neighbors : int
        UMAP's neighbourhood size, also used to place new codes.
    seed : int
        UMAP's random state.

    Attributes
    ----------
    positions : ndarray [N, 2]
        The reference codes' positions in the picture.
    """

    def __init__(self, codes: torch.Tensor, n_neighbors: int = 15, seed: int = 0):
        import umap

        codes = torch.as_tensor(codes, dtype=torch.float32).cpu()
        if codes.dim() != 2 or codes.shape[0] <= n_neighbors:
            raise UserInputError(f"codes must be [N, d] with N > n_neighbors = {n_neighbors}, got {tuple(codes.shape)}")
        self.codes = codes
        self.n_neighbors = n_neighbors
        dists, idxs = nearest_neighbours(codes, codes, n_neighbors)
        # 200 layout epochs: umap-learn's own choice above 10,000 points. It takes 500 up to 10,000
        # (exactly ae-ot umap's default), 2.5x the layout time (~5 s more) for the same picture.
        reducer = umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1, n_epochs=200,
                            precomputed_knn=(idxs.numpy(), dists.numpy().astype(np.float32), None))
        with warnings.catch_warnings():
            # "precomputed_knn[2] is not an NNDescent object: transform will be unavailable": we do
            # not call umap's transform (see place).
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            self.positions = reducer.fit_transform(codes.numpy())

    def place(self, queries: torch.Tensor) -> np.ndarray:
        """Positions [M, 2] of new codes [M, d]: the membership-weighted mean of the positions of
        their ``n_neighbors`` nearest reference codes."""
        queries = torch.as_tensor(queries, dtype=torch.float32).cpu()
        dists, idxs = nearest_neighbours(self.codes, queries, self.n_neighbors)
        weights = membership_weights(dists)
        weights = weights / weights.sum(dim=1, keepdim=True)
        positions = torch.from_numpy(np.asarray(self.positions, dtype=np.float64))
        return (weights[:, :, None] * positions[idxs]).sum(dim=1).numpy()
