"""Bad input to ae_ot.ot.SemiDiscreteOT: clear errors (and a warning for duplicates)."""

import pytest
import torch

from ae_ot.ot import SemiDiscreteOT


def test_nan_inf_targets():
    y = torch.rand(10, 3)
    y[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf.*row 4"):
        SemiDiscreteOT(y)
    y[4, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        SemiDiscreteOT(y)


def test_nan_weights():
    w = torch.full((10,), 0.1)
    w[2] = float("nan")
    with pytest.raises(ValueError, match="weights contain NaN or Inf"):
        SemiDiscreteOT(torch.rand(10, 3), w)


def test_negative_weights():
    w = torch.full((10,), 0.1)
    w[0], w[1] = -0.1, 0.3
    with pytest.raises(ValueError, match="non-negative.*weight 0"):
        SemiDiscreteOT(torch.rand(10, 3), w)


def test_weights_not_summing_to_one_says_the_sum():
    with pytest.raises(ValueError, match="sum to 1, they sum to 2"):
        SemiDiscreteOT(torch.rand(10, 3), torch.full((10,), 0.2))


def test_weights_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        SemiDiscreteOT(torch.rand(10, 3), torch.full((9,), 1 / 9))


def test_empty_targets():
    with pytest.raises(ValueError, match="N = 0"):
        SemiDiscreteOT(torch.zeros(0, 3))


def test_targets_not_2d():
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        SemiDiscreteOT(torch.rand(10))


def test_sample_dimension_mismatch():
    ot = SemiDiscreteOT(torch.rand(10, 3))
    with pytest.raises(ValueError, match=r"shape \[M, 3\]"):
        ot.assign(torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"shape \[M, 3\]"):
        ot.topk(torch.rand(5, 2), 1)


def test_low_not_below_high():
    with pytest.raises(ValueError, match="low must be < high"):
        SemiDiscreteOT(torch.rand(10, 3), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="dimension 1"):
        SemiDiscreteOT(torch.rand(10, 3), low=torch.tensor([0.0, 2.0, 0.0]), high=1.0)


def test_samples_on_another_device():
    ot = SemiDiscreteOT(torch.rand(10, 3))
    x = torch.rand(5, 3, device="meta")
    with pytest.raises(ValueError, match="samples are on meta but the targets are on cpu"):
        ot.assign(x)


def test_duplicates_merged_with_summed_weights():
    y = torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.1, 0.2], [0.9, 0.1], [0.5, 0.5]])
    w = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25])
    with pytest.warns(UserWarning, match="2 duplicate target"):
        ot = SemiDiscreteOT(y, w)
    assert ot.num_targets == 3
    assert torch.equal(ot.targets, y[[0, 1, 3]])  # order of first occurrence
    assert torch.allclose(ot.weights, torch.tensor([0.4, 0.45, 0.15]))
    assert ot.merged_index.tolist() == [0, 1, 0, 2, 1]


def test_bad_topk_k_and_method():
    ot = SemiDiscreteOT(torch.rand(10, 3))
    with pytest.raises(ValueError, match="k must be"):
        ot.topk(torch.rand(4, 3), 11)
    with pytest.raises(ValueError, match="method"):
        ot.fit(method="adam", progress=False)
    with pytest.raises(ValueError, match="backend"):
        SemiDiscreteOT(torch.rand(10, 3), backend="cuda")
