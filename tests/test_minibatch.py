"""Minibatch OT estimators (ae_ot.ot.minibatch): exactness, unbiasedness of the incomplete
estimator, bias on a measure with itself, plan marginals, gradients, Sinkhorn divergence, bad input."""

import itertools
import math

import pytest
import torch

from ae_ot.ot.minibatch import (
    complete_minibatch_transport_plan,
    complete_minibatch_wasserstein,
    debiased_minibatch_wasserstein,
    exact_ot_equal_size,
    minibatch_transport_plan,
    minibatch_wasserstein,
    sinkhorn_divergence,
    squared_euclidean_cost,
)


def points(n, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_exact_ot_matches_brute_force_over_permutations():
    x, y = points(6, seed=1), points(6, seed=2)
    value, cols = exact_ot_equal_size(x, y)
    cost = squared_euclidean_cost(x, y)
    brute = min(sum(cost[i, p[i]] for i in range(6)) / 6 for p in itertools.permutations(range(6)))
    assert value.item() == pytest.approx(brute.item(), rel=1e-12)
    assert sorted(cols.tolist()) == list(range(6))  # a permutation


def test_full_minibatch_of_itself_is_zero_and_gradient_flows_through_matched_pairs():
    x, y = points(5, seed=3).requires_grad_(True), points(5, seed=4)
    assert minibatch_wasserstein(x.detach(), x.detach(), m=5, k=3).item() == pytest.approx(0.0, abs=1e-12)
    value, cols = exact_ot_equal_size(x, y)
    value.backward()
    expected = 2.0 * (x.detach() - y[cols]) / 5  # d/dx_i of (1/m) sum |x_i - y_sigma(i)|^2
    assert torch.allclose(x.grad, expected)


@pytest.mark.heavy
def test_incomplete_estimator_mean_equals_complete_average():
    """On tiny point sets the mean of h_1 over many random minibatch pairs equals the complete
    U-statistic (average over all C(6,3)^2 = 400 pairs): within 4 standard errors, and within 3%."""
    x, y = points(6, seed=5), points(6, seed=6) + 0.5
    complete = complete_minibatch_wasserstein(x, y, m=3).item()
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([minibatch_wasserstein(x, y, m=3, k=1, generator=gen) for _ in range(3000)])
    mean, stderr = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    assert abs(mean - complete) < 4 * stderr
    assert abs(mean - complete) < 0.03 * complete
    # k pairs in one call average the same way
    assert minibatch_wasserstein(x, y, m=3, k=3000, generator=torch.Generator().manual_seed(1)).item() == \
        pytest.approx(complete, rel=0.03)


@pytest.mark.heavy
def test_minibatch_loss_of_a_measure_with_itself_is_positive_and_debiased_is_smaller():
    x = points(8, seed=7)
    biased = complete_minibatch_wasserstein(x, x, m=4).item()
    assert biased > 0.1  # Fatras et al. (2020): h(x, x) > 0 when m < n, the minibatch loss is not a distance
    # complete debiased form: h(x,x) - h(x,x)/2 - h(x,x)/2 = 0 exactly
    debiased_complete = biased - 0.5 * biased - 0.5 * biased
    assert debiased_complete < biased
    gen = torch.Generator().manual_seed(0)
    incomplete = minibatch_wasserstein(x, x, m=4, k=500, generator=gen).item()
    debiased = debiased_minibatch_wasserstein(x, x, m=4, k=500, generator=gen).item()
    assert incomplete > 0.5 * biased
    assert abs(debiased) < 0.2 * incomplete < incomplete
    # and for two different measures the debiased form is still smaller than the biased one
    y = points(8, seed=8) + 1.0
    assert debiased_minibatch_wasserstein(x, y, 4, 500, gen) < minibatch_wasserstein(x, y, 4, 500, gen)


@pytest.mark.heavy
def test_averaged_plan_marginals_are_uniform():
    x, y = points(5, seed=9), points(6, seed=10)
    plan = complete_minibatch_transport_plan(x, y, m=3)
    assert plan.shape == (5, 6)
    assert torch.allclose(plan.sum(1), torch.full((5,), 1 / 5, dtype=plan.dtype), atol=1e-12)
    assert torch.allclose(plan.sum(0), torch.full((6,), 1 / 6, dtype=plan.dtype), atol=1e-12)
    # the incomplete plan: total mass 1 exactly, marginals uniform up to sampling noise
    inc = minibatch_transport_plan(x, y, m=3, k=4000, generator=torch.Generator().manual_seed(0))
    assert inc.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(inc.sum(1), torch.full((5,), 1 / 5, dtype=inc.dtype), atol=0.01)
    assert torch.allclose(inc.sum(0), torch.full((6,), 1 / 6, dtype=inc.dtype), atol=0.01)
    assert torch.allclose(inc, plan, atol=0.015)  # and it converges to the complete plan
    # one pair's plan is a permutation matrix / m on its (I, J) block
    single = minibatch_transport_plan(x, y, m=3, k=1, generator=torch.Generator().manual_seed(2))
    assert (single > 0).sum().item() == 3 and torch.allclose(single[single > 0], torch.tensor(1 / 3, dtype=single.dtype))


def test_sinkhorn_divergence_of_a_batch_with_itself_is_zero_and_grows_with_a_shift():
    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(0))
    assert abs(sinkhorn_divergence(x, x, blur=1.0).item()) < 1e-4
    values = [sinkhorn_divergence(x, x + s, blur=1.0).item() for s in (0.02, 0.05, 0.1)]
    assert 0 < values[0] < values[1] < values[2]
    # for a pure translation S_eps equals |shift|^2 / 2 (cost |a - b|^2 / 2)
    assert values[2] == pytest.approx(784 * 0.1 ** 2 / 2, rel=1e-3)
    y = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # images are flattened
    assert sinkhorn_divergence(x, y, blur=1.0).item() > values[0]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: minibatch_wasserstein(x, y, m=0), "m .*positive"),
        (lambda x, y: minibatch_wasserstein(x, y, m=2, k=0), "k .*positive"),
        (lambda x, y: minibatch_wasserstein(x, y, m=2.5), "m .*positive"),
        (lambda x, y: minibatch_wasserstein(x, y, m=7), "larger than the number of points"),
        (lambda x, y: exact_ot_equal_size(x, y[:4]), "same size"),
        (lambda x, y: debiased_minibatch_wasserstein(x, y, m=-1), "m .*positive"),
        (lambda x, y: complete_minibatch_wasserstein(torch.randn(40, 2), torch.randn(40, 2), m=20), "incomplete"),
        (lambda x, y: sinkhorn_divergence(x, y, blur=0.0), "blur"),
        (lambda x, y: sinkhorn_divergence(x, y, backend="gpu"), "backend"),
        # NaN used to fail deep inside scipy ("invalid numeric entries") and GeomLoss ("arange")
        (lambda x, y: minibatch_wasserstein(x * float("nan"), y, m=2), "x contains NaN or Inf"),
        (lambda x, y: sinkhorn_divergence(x, y * float("inf"), blur=1.0), "y contains NaN or Inf"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    x, y = points(6, seed=0), points(5, seed=1)
    with pytest.raises(ValueError, match=match):
        call(x, y)
