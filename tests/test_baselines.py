"""Baseline generators (WGAN, WGAN-GP, Sinkhorn, minibatch Wasserstein): one short `ae-ot fit`
each through the real CLI, checkpoint reload and sampling; the gradient penalty; bad input."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from ae_ot.cli import main
from ae_ot.generators import WGAN, WGANGP, MinibatchWassersteinGenerator, SinkhornGenerator
from ae_ot.generators.wgan import gradient_penalty

REPO = Path(__file__).resolve().parents[1]

# (config, class, extra overrides, expected generator steps after 10 batches)
# (small widths keep each run to a few seconds; the configs themselves are unchanged otherwise)
SMALL = ["--model.init_args.width=8"]
MODELS = [
    ("wgan", WGAN, SMALL + ["--model.init_args.critic_width=8"], 2),
    ("wgan_gp", WGANGP, SMALL + ["--model.init_args.critic_width=8"], 2),
    ("sinkhorn", SinkhornGenerator, SMALL, 10),
    ("minibatch_wasserstein", MinibatchWassersteinGenerator,
     SMALL + ["--model.init_args.m=16", "--model.init_args.k=2"], 10),
]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def fit(tmp_path, *args):
    main(["fit", *args, "--data.subset=512", "--data.batch_size=32", "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=10", f"--trainer.default_root_dir={tmp_path}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    run = tmp_path / "lightning_logs" / "version_0"
    return run, next((run / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize("config, cls, extra, gen_steps", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.cli
def test_cli_fit_checkpoint_and_sample(tmp_path, config, cls, extra, gen_steps):
    run, ckpt = fit(tmp_path, "--config", str(REPO / "models" / f"{config}.yaml"), *extra)
    assert (run / "images" / "samples_epoch000.png").is_file()  # the shared grid logging
    model = cls.load_from_checkpoint(ckpt, map_location="cpu")
    assert int(model.generator_steps) == gen_steps  # counted by the module, saved in the checkpoint
    images = model.sample(8, seed=0)
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, model.sample(8, seed=0))
    assert not torch.equal(images, model.sample(8, seed=1))
    if cls is WGAN:  # every critic weight stays in the clipping box
        assert max(p.abs().max().item() for p in model.critic.parameters()) <= model.clip_value + 1e-12
    if cls in (WGAN, WGANGP):  # Lightning's global_step counts critic and generator updates
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 10 + gen_steps


@pytest.mark.cli
def test_cli_model_by_class_name(tmp_path):
    run, ckpt = fit(tmp_path, "--model", "WGANGP", "--model.width=8", "--model.n_critic=2")
    model = WGANGP.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.hparams.width == 8 and int(model.generator_steps) == 5
    assert model.sample(3, seed=0).shape == (3, 1, 28, 28)


@pytest.mark.cli
def test_cli_m_larger_than_batch_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--config", str(REPO / "models" / "minibatch_wasserstein.yaml"), "--model.init_args.m=64")
    assert exit_info.value.code == 2
    assert "m=64 is larger than the batch size 32" in capsys.readouterr().err


class LinearCritic(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight + 0.3


def test_gradient_penalty_zero_for_unit_norm_linear_critic_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 1, 28, 28, generator=gen), torch.rand(16, 1, 28, 28, generator=gen)
    w = torch.randn(784, generator=gen)
    penalty, norms = gradient_penalty(LinearCritic(w / w.norm()), real, fake)
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(norms, torch.ones(16))
    penalty, norms = gradient_penalty(LinearCritic(2 * w / w.norm()), real, fake)
    assert penalty.item() == pytest.approx(1.0, rel=1e-5)  # (|grad| - 1)^2 = (2 - 1)^2
    penalty, _ = gradient_penalty(WGANGP(width=4).critic, real, fake)
    assert penalty.item() > 0
    penalty.backward()  # differentiable w.r.t. the critic weights (create_graph)


def test_sinkhorn_in_code_space_of_a_frozen_encoder(tmp_path):
    from ae_ot.generators import Autoencoder

    ae = Autoencoder(latent_dim=4, width=4)
    path = tmp_path / "ae.ckpt"
    torch.save({"state_dict": ae.state_dict(), "hyper_parameters": dict(ae.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    model = SinkhornGenerator(width=4, cost_space="codes", encoder_checkpoint=str(path), blur=0.1)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.training
    fake = model.generator(torch.randn(8, 128))
    loss = model.divergence(fake, torch.rand(8, 1, 28, 28))
    loss.backward()
    assert torch.isfinite(loss) and model.generator.fc[0].weight.grad.abs().sum() > 0
    assert model.features(torch.rand(3, 1, 28, 28)).shape == (3, 4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: WGAN(n_critic=0), "n_critic"),
        (lambda: WGAN(clip_value=0.0), "clip_value"),
        (lambda: WGAN(clip_value=-0.01), "clip_value"),
        (lambda: WGAN(lr=0), "lr"),
        (lambda: WGANGP(gp_weight=0), "gp_weight"),
        (lambda: WGANGP(n_critic=-5), "n_critic"),
        (lambda: WGANGP(beta2=1.0), "beta2"),
        (lambda: SinkhornGenerator(blur=0), "blur"),
        (lambda: SinkhornGenerator(blur=-1.0), "blur"),
        (lambda: SinkhornGenerator(cost_space="codes"), "encoder_checkpoint"),
        (lambda: MinibatchWassersteinGenerator(m=0), "m "),
        (lambda: MinibatchWassersteinGenerator(k=0), "k "),
        (lambda: MinibatchWassersteinGenerator(k=1.5), "k "),
        (lambda: WGAN(channels=0), "channels"),
        (lambda: SinkhornGenerator(channels=-3), "channels"),
        (lambda: MinibatchWassersteinGenerator(channels=2.0), "channels"),
    ],
)
def test_bad_arguments_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_argument_through_cli_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--config", str(REPO / "models" / "wgan.yaml"), "--model.init_args.n_critic=0")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "n_critic must be a positive integer" in err and "Traceback" not in err


def test_sinkhorn_backend_choice():
    model = SinkhornGenerator(width=4)
    assert model.resolved_backend(64) == "tensorized"  # CPU: dense matrices
    assert model.resolved_backend(100_000) == "tensorized"  # no KeOps online backend on the CPU by default
    assert SinkhornGenerator(width=4, backend="online").resolved_backend(64) == "online"
    with pytest.raises(ValueError, match="backend"):
        SinkhornGenerator(backend="keops")


def test_batch_norm_generator_only_and_three_channels():
    # WGAN's batch-norm option normalises the generator only (the critic's penalty and clipping are
    # per sample); `channels` sets the generator's output and the critic's input.
    model = WGAN(width=8, batch_norm=True, channels=3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.critic.modules())
    assert model.sample(4, seed=0).shape == (4, 3, 28, 28)
    assert model.critic(torch.rand(4, 3, 28, 28)).shape == (4,)
    plain = WGANGP(width=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.generator.modules())


@pytest.mark.heavy
def test_sinkhorn_online_keops_backend_matches_tensorized():
    # The KeOps "online" backend (meant for large GPU batches) runs on CPU too: same divergence and
    # same gradient as the dense one, so the GPU path computes the same loss. Skips without KeOps.
    from ae_ot.ot import kernels

    if not kernels.keops_available():
        pytest.skip("pykeops not importable")
    torch.manual_seed(0)
    fake = torch.rand(40, 1, 28, 28, requires_grad=True)
    real = torch.rand(50, 1, 28, 28)
    dense = SinkhornGenerator(width=4, backend="tensorized").divergence(fake, real)
    (g_dense,) = torch.autograd.grad(dense, fake)
    try:
        online = SinkhornGenerator(width=4, backend="online").divergence(fake, real)
        (g_online,) = torch.autograd.grad(online, fake)
    except Exception as e:  # compilation problems are an environment issue, not a wrong answer
        pytest.skip(f"KeOps failed to compile/run: {e}")
    assert float(dense) > 0
    assert abs(float(online) - float(dense)) <= 1e-3 * abs(float(dense)) + 1e-4
    assert torch.allclose(g_online, g_dense, rtol=1e-3, atol=1e-6)
