"""Exact nearest neighbours (``ae_ot.evaluation.latent``) and UMAP's placement weights (``embedding``)."""

import math

import pytest
import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.embedding import membership_weights
from ae_ot.evaluation.latent import gap_score, gap_threshold, nearest_neighbour_distances, nearest_neighbours


def test_nearest_neighbours_are_the_exact_ones_and_a_point_finds_itself_first():
    gen = torch.Generator().manual_seed(0)
    points, queries = torch.randn(700, 5, generator=gen), torch.randn(90, 5, generator=gen)
    dists, idxs = nearest_neighbours(points, queries, k=7, chunk=32)  # several tiles
    brute = ((queries[:, None, :] - points[None]) ** 2).sum(-1).sqrt()
    expected_dists, expected_idxs = brute.sort(dim=1)
    assert torch.equal(idxs, expected_idxs[:, :7])
    assert torch.allclose(dists, expected_dists[:, :7], atol=1e-5)
    self_dists, self_idxs = nearest_neighbours(points, points[:50], k=3)
    assert torch.equal(self_idxs[:, 0], torch.arange(50)) and torch.all(self_dists[:, 0] == 0)
    with pytest.raises(UserInputError, match="k must be"):
        nearest_neighbours(points, queries, k=701)
    # the distances the gap score reads: to the nearest point, and leave-one-out (an exact copy
    # of another point is at 0; a point never finds itself)
    assert torch.allclose(nearest_neighbour_distances(points, queries), expected_dists[:, 0], atol=1e-5)
    with_copy = torch.cat([points, points[:1]])
    self_excluded = ((with_copy[:, None, :] - with_copy[None]) ** 2).sum(-1).sqrt()
    self_excluded.fill_diagonal_(float("inf"))
    loo = nearest_neighbour_distances(with_copy)
    assert torch.allclose(loo, self_excluded.min(dim=1).values, atol=1e-5)
    assert loo[0] == 0 and loo[-1] == 0


def test_membership_weights_sum_to_log2_k_and_decrease_with_distance():
    gen = torch.Generator().manual_seed(1)
    dists = torch.rand(40, 15, generator=gen).sort(dim=1).values * 3
    weights = membership_weights(dists)
    assert torch.allclose(weights.sum(dim=1), torch.full((40,), math.log2(15), dtype=weights.dtype), atol=1e-6)
    assert torch.all(weights[:, 1:] <= weights[:, :-1])
    assert torch.equal(membership_weights(dists[:, :1]), torch.ones(40, 1, dtype=torch.float64))


@pytest.mark.parametrize("call, match", [
    (lambda: gap_score(torch.randn(5, 4), torch.randn(1, 4)), "at least 2 training codes"),  # used to give 0
    (lambda: gap_score(torch.randn(0, 4), torch.randn(10, 4)), "non-empty"),
    (lambda: gap_threshold(torch.randn(10, 4), quantile=1.5), r"quantile must be in \(0, 1\]"),
])
def test_gap_score_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
