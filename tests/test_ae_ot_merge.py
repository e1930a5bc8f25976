"""AE-OT with duplicate codes: the stored targets are the solver's merged targets, so every cell
index the solver returns reads the code it was solved for (issue 11, the duplicate-merge bug)."""

import dataclasses
import math

import pytest
import pytorch_lightning as pl
import torch

from ae_ot.checkpoint import load_generator
from ae_ot.generators import AEOT
from ae_ot.ot.duplicates import merge_duplicates as merge_duplicate_codes

D = 4


def _codes_with_duplicates():
    """60 codes: 20 distinct ones, repeated 1..5 times, shuffled (duplicates are not adjacent)."""
    g = torch.Generator().manual_seed(3)
    distinct = torch.randn(25, D, generator=g)
    copies = torch.arange(25) % 5 + 1                      # 1, 2, 3, 4, 5, 1, ... -> 75 rows
    codes = distinct.repeat_interleave(copies, 0)[:60]
    return codes[torch.randperm(60, generator=g)]


@pytest.fixture(scope="module")
def solved():
    codes = _codes_with_duplicates()
    model = AEOT(latent_dim=D, ot=dict(time_limit=None, max_steps=40, seed=1))
    with pytest.warns(UserWarning, match="duplicate"):
        model.solve_ot(codes, progress=False)
    return model, codes


def _noise(n, seed):
    return torch.rand(n, D, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def test_stored_targets_are_the_solvers_merged_targets(solved):
    model, codes = solved
    counts = {}
    for row in codes.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert model.sampler.targets.shape == (len(counts), D) and model.sampler.heights.shape == (len(counts),)
    assert torch.unique(model.sampler.targets, dim=0).shape[0] == len(counts)          # no duplicate left
    assert torch.equal(model.sampler.targets, model.sampler.solver.targets)
    assert torch.allclose(model.sampler.weights.double(), model.sampler.solver.weights.double(), atol=1e-7)
    # every target's weight is its code's number of copies / N
    originals = model.sampler.shift + model.sampler.scale * model.sampler.targets
    for target, weight in zip(originals, model.sampler.weights):
        match = (codes - target).abs().amax(1) < 1e-5
        assert int(match.sum()) == counts[tuple(codes[match][0].tolist())]
        assert weight.item() == pytest.approx(int(match.sum()) / codes.shape[0], rel=1e-6)
    assert model.sampler.report["num_codes"] == 60 and model.sampler.report["num_targets"] == len(counts)


def test_plain_map_returns_the_training_code_of_the_cell(solved):
    model, codes = solved
    z = model.latent_samples(2000, torch.Generator().manual_seed(5), extension="none")
    cells = model.sampler.solver.assign(_noise(2000, 5))
    # exactly the (un-normalised) target of the cell the solver assigns ...
    assert torch.equal(z, model.sampler.shift + model.sampler.scale * model.sampler.targets[cells])
    # ... which is a training code, and different cells give different codes
    assert ((z[:, None, :] - codes[None]).abs().amax(-1).min(1).values < 1e-5).all()
    assert torch.unique(z, dim=0).shape[0] == torch.unique(cells).numel() > 10


def test_extended_map_reads_the_same_targets(solved):
    model, _ = solved
    plain = model.latent_samples(2000, torch.Generator().manual_seed(6), extension="none")
    settings = model.sampler.settings
    model.sampler.settings = dataclasses.replace(settings, radius=0.0)  # no band: the plain map
    try:
        assert torch.equal(model.latent_samples(2000, torch.Generator().manual_seed(6), extension="extended"), plain)
    finally:
        model.sampler.settings = settings
    # with the band the extended map creates new codes
    extended = model.latent_samples(2000, torch.Generator().manual_seed(6), extension="extended")
    assert torch.isfinite(extended).all() and not torch.equal(extended, plain)


def _save(model, path, state):
    torch.save({"state_dict": state, "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, path)


def test_checkpoint_round_trip_keeps_the_weights(solved, tmp_path):
    model, _ = solved
    _save(model, tmp_path / "m.ckpt", model.state_dict())
    restored = AEOT.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert torch.equal(restored.sampler.weights, model.sampler.weights)
    assert torch.equal(restored.sampler.solver.weights, model.sampler.solver.weights)
    for mode in ("none", "extended"):
        a = model.latent_samples(500, torch.Generator().manual_seed(7), extension=mode)
        b = restored.latent_samples(500, torch.Generator().manual_seed(7), extension=mode)
        assert torch.allclose(a, b, atol=1e-6)


def test_checkpoint_of_an_older_layout_or_inconsistent_solution_is_refused_clearly(solved, tmp_path):
    """An AE-OT checkpoint of the layout with ``ot_*`` hyperparameters and buffers gets one line
    naming the re-solve command; heights that do not match the stored targets cannot sample."""
    model, _ = solved
    old_state = {k.replace("sampler.", "ot_"): v for k, v in model.state_dict().items()}
    torch.save({"state_dict": old_state, "hyper_parameters": {"latent_dim": D, "ot_time_limit": 150.0},
                "generator_class_path": "ae_ot.generators.ae_ot.AEOT", "pytorch-lightning_version": pl.__version__},
               tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="older layout.*autoencoder_ckpt="):
        load_generator(tmp_path / "old.ckpt")
    state = dict(model.state_dict())
    state["sampler.heights"] = state["sampler.heights"][:-1].clone()
    _save(model, tmp_path / "broken.ckpt", state)
    broken = AEOT.load_from_checkpoint(tmp_path / "broken.ckpt", map_location="cpu")
    with pytest.raises(ValueError, match="inconsistent"):
        broken.sample(4)


def test_merge_duplicate_codes_rule():
    rows = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    unique, weights, index = merge_duplicate_codes(rows)
    assert unique.tolist() == [[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]                  # order of first occurrence
    assert weights.tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])
    assert index.tolist() == [0, 1, 0, 2, 1, 0] and torch.equal(unique[index], rows)
    distinct = torch.randn(7, 3)
    same, uniform, identity = merge_duplicate_codes(distinct)
    assert same is distinct and torch.equal(identity, torch.arange(7))
    assert math.isclose(float(uniform.sum()), 1.0) and float(uniform.max() - uniform.min()) == 0.0
