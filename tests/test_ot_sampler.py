"""AE-OT's latent sampler without Lightning: normalise, merge, solve, sample, state round trip."""

import pytest
import torch

from ae_ot.ot.sampler import LatentOTSampler, LatentOTSettings, OTSolutionMissingError


def _codes(n=200, d=4, seed=0):
    return 3.0 + 2.0 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def sampler():
    sampler = LatentOTSampler(LatentOTSettings(time_limit=None, max_steps=30), latent_dim=4)
    sampler.fit(_codes(), progress=False)
    return sampler


def test_fit_normalises_into_the_box_and_the_plain_map_returns_training_codes(sampler):
    assert sampler.solved and sampler.targets.shape == (200, 4)
    assert float(sampler.targets.abs().max()) <= 1.0 + 1e-6
    assert torch.allclose(sampler.target_codes(), _codes(), atol=1e-5)
    plain = sampler.sample(500, torch.Generator().manual_seed(1), extension="none")
    distances = torch.cdist(plain, _codes(), compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert float(distances.max()) < 1e-4
    extended = sampler.sample(500, torch.Generator().manual_seed(1))
    assert extended.shape == (500, 4) and not torch.equal(extended, plain)
    assert torch.equal(sampler.sample(50, torch.Generator().manual_seed(2)),
                       sampler.sample(50, torch.Generator().manual_seed(2)))


def test_state_dict_round_trip_into_an_empty_sampler(sampler):
    fresh = LatentOTSampler(sampler.settings, latent_dim=4)
    assert not fresh.solved
    with pytest.raises(OTSolutionMissingError, match="no OT solution"):
        fresh.sample(3, torch.Generator())
    fresh.load_state_dict(sampler.state_dict())
    assert fresh.report["steps"] == sampler.report["steps"] == 30
    for generator_seed in (3, 4):
        a = sampler.sample(100, torch.Generator().manual_seed(generator_seed))
        b = fresh.sample(100, torch.Generator().manual_seed(generator_seed))
        assert torch.allclose(a, b, atol=1e-6)


def test_duplicates_become_one_weighted_target():
    codes = _codes(50)
    doubled = torch.cat([codes, codes[:10]])
    sampler = LatentOTSampler({"time_limit": None, "max_steps": 5}, latent_dim=4)
    with pytest.warns(UserWarning, match="10 duplicate code"):
        report = sampler.fit(doubled, progress=False)
    assert report["num_codes"] == 60 and report["num_targets"] == 50
    assert torch.allclose(sampler.weights[:10], torch.full((10,), 2 / 60, dtype=torch.float64))
    assert torch.allclose(sampler.weights[10:], torch.full((40,), 1 / 60, dtype=torch.float64))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown ot setting.*'time_limt'"):
        LatentOTSettings.coerce({"time_limt": 5})
    with pytest.raises(ValueError, match="radius"):
        LatentOTSettings(radius=-1.0)
    with pytest.raises(ValueError, match="num_targets"):
        LatentOTSettings(num_targets=1)
    with pytest.raises(ValueError, match="codes must be"):
        LatentOTSampler().fit(torch.zeros(1, 3))
