"""Latent flow matching (OT-CFM / CFM): the maths on a 2-D toy, the LatentFlowMatching generator,
its CLI config, its bad input, and `ae-ot latent-compare`."""

import itertools
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from ae_ot.checkpoint import load_generator
from ae_ot.commands import latent_compare
from ae_ot.commands import sample as sample_cmd
from ae_ot.data import MNISTDataModule
from ae_ot.flow_matching import (
    VelocityField,
    chord_deviation,
    conditional_flow_matching_loss,
    couple,
    integrate,
    pair_by_minibatch_ot,
)
from ae_ot.generators import AEOT, LatentFlowMatching
from ae_ot.generators.latent_flow import FlowNotTrainedError

# --------------------------------------------------------------------------------------------
# 2-D toy: standard normal noise -> 8 Gaussians on a circle
# --------------------------------------------------------------------------------------------
TOY_RADIUS, TOY_STD = 4.0, 0.3
TOY_CENTRES = TOY_RADIUS * torch.stack([torch.cos(torch.arange(8) * math.pi / 4),
                                        torch.sin(torch.arange(8) * math.pi / 4)], 1)


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    modes = torch.randint(0, 8, (n,), generator=generator)
    return TOY_CENTRES[modes] + TOY_STD * torch.randn(n, 2, generator=generator)


def within_three_std(points: torch.Tensor) -> float:
    return (torch.cdist(points, TOY_CENTRES).min(1).values < 3 * TOY_STD).float().mean().item()


def train_toy_flow(coupling: str, steps: int = 1500, batch_size: int = 64) -> VelocityField:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    velocity = VelocityField(2, hidden_dim=64, num_layers=3, time_embedding_dim=16)
    optimizer = torch.optim.Adam(velocity.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = conditional_flow_matching_loss(velocity, eight_gaussians(batch_size, generator), coupling,
                                              generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return velocity.eval()


@pytest.fixture(scope="module")
def toy_flows():
    return {coupling: train_toy_flow(coupling) for coupling in ("ot", "independent")}


@pytest.fixture(scope="module")
def toy_noise():
    return torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))


@pytest.mark.cli
def test_ot_cfm_moves_noise_onto_the_modes(toy_flows, toy_noise):
    assert within_three_std(toy_noise) < 0.05          # the noise itself is not on the modes
    samples = integrate(toy_flows["ot"], toy_noise, num_steps=50, solver="midpoint")
    assert within_three_std(samples) > 0.75
    # every mode receives samples (no mode dropped): at least half its share of 1/8
    nearest = torch.cdist(samples, TOY_CENTRES).argmin(1)
    assert torch.bincount(nearest, minlength=8).min() > 0.5 * samples.shape[0] / 8


@pytest.mark.cli
def test_ot_coupling_gives_straighter_paths(toy_flows, toy_noise):
    deviation = {name: chord_deviation(integrate(flow, toy_noise, 50, "midpoint", return_path=True))
                 for name, flow in toy_flows.items()}
    assert deviation["ot"] < 0.25 * deviation["independent"], deviation
    # straight paths pay off at one Euler step: OT-CFM already lands on the modes, CFM does not
    one_step = {name: within_three_std(integrate(flow, toy_noise, 1, "euler")) for name, flow in toy_flows.items()}
    assert one_step["ot"] > one_step["independent"] + 0.3, one_step


def test_minibatch_ot_pairing_is_the_optimal_permutation():
    generator = torch.Generator().manual_seed(3)
    z0, z1 = torch.randn(6, 3, generator=generator), 2 + torch.randn(6, 3, generator=generator)
    paired = pair_by_minibatch_ot(z0, z1)
    # a permutation of z1 ...
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, z1.tolist()))
    # ... with the smallest total squared distance of all 720
    best = min(((z0 - z1[list(p)]) ** 2).sum().item() for p in itertools.permutations(range(6)))
    assert math.isclose(((z0 - paired) ** 2).sum().item(), best, rel_tol=1e-6)
    same_z0, kept = couple(z0, z1, "independent")
    assert same_z0 is z0 and torch.equal(kept, z1)


def test_solvers_and_chord_deviation_against_closed_forms():
    z0 = torch.tensor([[1.0, -2.0]])
    constant = integrate(lambda t, z: torch.full_like(z, 3.0), z0, num_steps=1, solver="euler")
    assert torch.allclose(constant, z0 + 3.0)
    # dz/dt = z: z(1) = e z0; midpoint's error is O(h^2), Euler's O(h)
    exact = math.e * z0
    euler = integrate(lambda t, z: z, z0, 10, "euler")
    midpoint = integrate(lambda t, z: z, z0, 10, "midpoint")
    assert (midpoint - exact).abs().max() < 0.1 * (euler - exact).abs().max()
    # dz/dt = 2 t e: z(t) = t^2 e; deviation from the chord t e is (t^2 - t)^2
    path = integrate(lambda t, z: torch.full_like(z, 2 * t) * torch.tensor([1.0, 0.0]), torch.zeros(1, 2), 40,
                     "midpoint", return_path=True)
    assert path.shape == (41, 1, 2)
    t = torch.linspace(0, 1, 41, dtype=torch.float64)
    assert math.isclose(chord_deviation(path), ((t ** 2 - t) ** 2).mean().item(), rel_tol=1e-4)
    straight = torch.linspace(0, 1, 11)[:, None, None] * torch.tensor([[2.0, 1.0]])
    assert chord_deviation(straight) < 1e-12


def test_cfm_loss_is_zero_for_the_true_velocity_of_a_point_mass():
    # all data at c: with z0 ~ N(0, I) and independent pairs the conditional velocity c - z0 is
    # reachable from (t, z_t) as (c - z_t) / (1 - t); the loss of that field is ~0
    c = torch.tensor([2.0, -1.0])

    def true_velocity(t, z):
        return (c - z) / (1 - t)[:, None]

    loss = conditional_flow_matching_loss(true_velocity, c.expand(64, 2).clone(), "independent",
                                          generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8
    wrong = conditional_flow_matching_loss(lambda t, z: torch.zeros_like(z), c.expand(64, 2).clone(), "independent",
                                           generator=torch.Generator().manual_seed(0))
    assert wrong.item() > 0.5


# --------------------------------------------------------------------------------------------
# The Lightning generator
# --------------------------------------------------------------------------------------------
SMALL = dict(latent_dim=8, hidden_dim=32, num_layers=2, time_embedding_dim=8, grid_every_n_epochs=0)


def small_datamodule():
    return MNISTDataModule(subset=1000, batch_size=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Autoencoder (1 epoch) then OT-CFM flow (2 epochs) on 1,000 images, in one fit."""
    root = tmp_path_factory.mktemp("latent_flow")
    pl.seed_everything(0)
    model = LatentFlowMatching(autoencoder_epochs=1, flow_epochs=2, **SMALL)
    trainer = pl.Trainer(max_epochs=-1, default_root_dir=root, enable_progress_bar=False)
    trainer.fit(model, small_datamodule())
    return model, trainer.checkpoint_callback.best_model_path, trainer


@pytest.mark.cli
def test_fit_trains_autoencoder_then_flow_and_stops(trained):
    model, ckpt, trainer = trained
    assert trainer.current_epoch == 3                     # 1 autoencoder + 2 flow epochs, then stop
    assert int(model.flow_trained_steps) == 2 * math.ceil(1000 / 128)
    assert float(model.latent_stage_seconds) > 0
    # the normalisation makes the codes standard: the flow's source and target have one scale
    codes = (model.encode_dataset(small_datamodule_images()) - model.flow_shift) / model.flow_scale
    assert codes.mean(0).abs().max() < 1e-3 and (codes.std(0) - 1).abs().max() < 1e-3
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["autoencoder_ckpt"] is None
    assert checkpoint["hyper_parameters"]["autoencoder_epochs"] == 1


def small_datamodule_images():
    datamodule = small_datamodule()
    datamodule.setup("fit")
    return datamodule.train_set.images


@pytest.mark.cli
def test_sample_is_deterministic_for_a_seed_and_survives_reloading(trained):
    model, ckpt, _ = trained
    a, b, c = model.sample(20, seed=5), model.sample(20, seed=5), model.sample(20, seed=6)
    assert a.shape == (20, 1, 28, 28) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    restored = load_generator(ckpt)
    assert isinstance(restored, LatentFlowMatching)
    assert torch.allclose(restored.sample(20, seed=5), a, atol=1e-6)
    # fewer steps give other samples; the path has num_steps + 1 points
    generator = torch.Generator().manual_seed(0)
    assert restored.latent_samples(7, generator, num_steps=3, solver="euler", return_path=True).shape == (4, 7, 8)


@pytest.mark.cli
def test_flow_from_an_autoencoder_checkpoint_keeps_the_autoencoder_frozen(trained, tmp_path):
    source, ckpt, _ = trained
    flow = LatentFlowMatching(autoencoder_ckpt=ckpt, flow_epochs=1, coupling="independent", **SMALL)
    assert flow.autoencoder_epochs == 0
    before = {k: v.clone() for k, v in flow.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    for key, value in before.items():
        assert torch.equal(value, source.state_dict()[key])
    trainer = pl.Trainer(max_epochs=-1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(flow, small_datamodule())
    assert trainer.current_epoch == 1 and flow.flow_is_trained
    for key, value in before.items():
        assert torch.equal(value, flow.state_dict()[key]), key
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    assert checkpoint["autoencoder_source"] == ckpt


@pytest.mark.cli
def test_bad_input_gets_clear_errors(trained, tmp_path):
    _, ckpt, _ = trained
    with pytest.raises(ValueError, match=r"autoencoder_ckpt must be an existing checkpoint file, got .*nope\.ckpt"):
        LatentFlowMatching(autoencoder_ckpt=str(tmp_path / "nope.ckpt"), **SMALL)
    with pytest.raises(ValueError, match=r"autoencoder_ckpt must match .*'latent_dim': 4.*'latent_dim': 8"):
        LatentFlowMatching(autoencoder_ckpt=ckpt, **{**SMALL, "latent_dim": 4})
    no_autoencoder = tmp_path / "no_autoencoder.ckpt"
    torch.save({"state_dict": {"generator.net.0.weight": torch.zeros(3)}, "hyper_parameters": {}}, no_autoencoder)
    with pytest.raises(ValueError, match="must hold an autoencoder's encoder and decoder weights"):
        LatentFlowMatching(autoencoder_ckpt=str(no_autoencoder), **SMALL)
    with pytest.raises(ValueError, match=r"num_steps must be an integer >= 1 .*got 0"):
        LatentFlowMatching(num_steps=0, **SMALL)
    with pytest.raises(ValueError, match=r"coupling must be one of 'ot', 'independent' .*got 'sinkhorn'"):
        LatentFlowMatching(coupling="sinkhorn", **SMALL)
    with pytest.raises(ValueError, match=r"solver must be one of 'euler', 'midpoint' .*got 'rk4'"):
        LatentFlowMatching(solver="rk4", **SMALL)
    model = load_generator(ckpt)
    with pytest.raises(ValueError, match=r"num_steps must be an integer >= 1 .*got -2"):
        model.latent_samples(4, torch.Generator(), num_steps=-2)
    untrained = LatentFlowMatching(**SMALL)
    with pytest.raises(FlowNotTrainedError, match="no trained flow"):
        untrained.sample(4)
    too_short = LatentFlowMatching(autoencoder_epochs=2, **SMALL)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    with pytest.raises(ValueError, match=r"max_epochs must exceed autoencoder_epochs=2 .*got 2"):
        trainer.fit(too_short, small_datamodule())


# --------------------------------------------------------------------------------------------
# The CLI config
# --------------------------------------------------------------------------------------------
@pytest.mark.slow   # the shipped config through the CLI (8 s); the module's fit has fast tests
def test_cli_fits_and_samples_the_config(cli, tmp_path):
    out = cli("fit", "--config", "models/latent_flow.yaml", "--data.subset=600", "--model.autoencoder_epochs=1",
              "--model.flow_epochs=1", "--model.hidden_dim=32", "--model.latent_dim=8",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["class_path"] == "ae_ot.generators.LatentFlowMatching"
    assert config["model"]["init_args"]["coupling"] == "ot"
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    assert "epoch=1" in ckpt.name                           # 1 autoencoder epoch + 1 flow epoch
    for name in ("a.npy", "b.npy"):
        sample_cmd.main(["--ckpt_path", str(ckpt), "--num_samples", "10", "--output", str(tmp_path / name),
                         "--seed", "3"])
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (10, 1, 28, 28) and np.array_equal(a, b) and 0 <= a.min() and a.max() <= 1


# --------------------------------------------------------------------------------------------
# ae-ot latent-compare
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compare_setup(trained, tmp_path_factory):
    """An AE-OT checkpoint on the trained flow's autoencoder, and both flows on it; a random
    classifier with a 400-image reference stands in for the project's classifier."""
    from ae_ot.data import load_mnist
    from ae_ot.evaluation.classifier import MNISTClassifier
    from ae_ot.evaluation.metrics import extract_features, gaussian_stats
    from ae_ot.evaluation.reference import RealReference

    flow, flow_ckpt, _ = trained
    root = tmp_path_factory.mktemp("latent_compare")
    aeot = AEOT(latent_dim=8, autoencoder_ckpt=flow_ckpt, ot=dict(num_targets=300, time_limit=1.0, max_steps=100))
    trainer = pl.Trainer(max_epochs=0, default_root_dir=root, enable_progress_bar=False, logger=False)
    trainer.fit(aeot, small_datamodule())
    aeot_ckpt = root / "aeot.ckpt"
    trainer.save_checkpoint(aeot_ckpt)
    independent = LatentFlowMatching(autoencoder_ckpt=str(aeot_ckpt), flow_epochs=1, coupling="independent", **SMALL)
    trainer = pl.Trainer(max_epochs=-1, default_root_dir=root / "independent", enable_progress_bar=False, logger=False)
    trainer.fit(independent, small_datamodule())
    torch.manual_seed(0)
    classifier = MNISTClassifier().eval()
    images = load_mnist().test_images[:400]
    features, _ = extract_features(images, classifier)
    reference = RealReference(1, features, torch.zeros(400), *gaussian_stats(features), "400 test images", classifier)
    return {"aeot": str(aeot_ckpt), "ot_cfm": flow_ckpt, "independent_cfm": trainer.checkpoint_callback.best_model_path,
            "classifier": classifier, "reference": reference, "root": root}


def _compare(setup, output_dir, *extra):
    args = ["--ckpt_path", setup["aeot"], "--ot_cfm_ckpt", setup["ot_cfm"], "--independent_cfm_ckpt",
            setup["independent_cfm"], "--num_samples", "200", "--num_codes", "300", "--steps", "1", "4",
            "--steps_num_samples", "60", "--output_dir", str(output_dir), "--no_progress", *extra]
    return latent_compare.main(args, classifier=setup["classifier"], reference=setup["reference"])


@pytest.mark.cli
def test_latent_compare_scores_four_samplers(compare_setup, tmp_path):
    summary = _compare(compare_setup, tmp_path, "--no_umap")
    rows = {r["sampler"]: r for r in summary["rows"]}
    assert list(rows) == ["naive", "aeot", "ot_cfm", "independent_cfm"]
    for r in rows.values():
        assert 0 <= r["gap_score"] <= 1 and 0 <= r["copies_of_training_codes"] <= 1
        assert r["sample_seconds_per_10k"] >= r["latent_seconds_per_10k"] > 0
        assert r["latent_train_seconds"] > 0 and "fid_classifier" in r["metrics"]
    # continuous samplers never copy a training code exactly
    assert rows["naive"]["copies_of_training_codes"] == 0 and rows["ot_cfm"]["copies_of_training_codes"] == 0
    assert [(s["sampler"], s["num_steps"]) for s in summary["steps"]] == \
        [("ot_cfm", 1), ("ot_cfm", 4), ("independent_cfm", 1), ("independent_cfm", 4)]
    assert set(summary["straightness_msd"]) == {"ot_cfm", "independent_cfm"}
    for name in ("latent_compare.md", "latent_compare.json", "latent_compare.png", "latent_steps.png"):
        assert (tmp_path / name).stat().st_size > 0
    markdown = (tmp_path / "latent_compare.md").read_text()
    assert "| AE-OT (extended map) |" in markdown and "OT-CFM (20 midpoint steps)" in markdown


@pytest.mark.cli
def test_latent_compare_refuses_mismatched_checkpoints(compare_setup, tmp_path):
    swapped = dict(compare_setup, ot_cfm=compare_setup["independent_cfm"])
    with pytest.raises(ValueError, match=r"--ot_cfm_ckpt must be trained with coupling='ot', got .*'independent'"):
        _compare(swapped, tmp_path, "--no_umap")
    checkpoint = torch.load(compare_setup["ot_cfm"], map_location="cpu", weights_only=False)
    key = next(k for k in checkpoint["state_dict"] if k.startswith("decoder."))
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 0.1
    other = tmp_path / "other_autoencoder.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(ValueError, match="must be trained on the autoencoder of .*decoder differs"):
        _compare(dict(compare_setup, ot_cfm=str(other)), tmp_path, "--no_umap")
    with pytest.raises(ValueError, match=r"num_steps must be an integer >= 1 .*got 0"):
        _compare(compare_setup, tmp_path, "--no_umap", "--steps", "0")


@pytest.mark.slow
def test_latent_compare_with_umap_figure(compare_setup, tmp_path):
    _compare(compare_setup, tmp_path)
    assert (tmp_path / "latent_compare.png").stat().st_size > 20000
