"""Stacked MNIST: three seeded MNIST digits as channels, 1,000 modes (labels 100*d0 + 10*d1 + d2)."""

import pytest
import torch

from ae_ot.data import StackedMNISTDataModule, load_stacked_mnist, stack_digits, stacked_mnist_indices
from ae_ot.evaluation import extract_features


def test_stack_digits_labels_match_the_channels(mnist):
    triples = stacked_mnist_indices(500, mnist.train_images.shape[0], seed=3)
    images, labels = stack_digits(mnist.train_images, mnist.train_labels, triples)
    assert images.shape == (500, 3, 28, 28) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    for j in range(3):
        assert torch.equal(images[:, j], mnist.train_images[triples[:, j], 0])
    d = mnist.train_labels[triples]
    assert torch.equal(labels, d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2])
    assert labels.min() >= 0 and labels.max() <= 999


def test_load_stacked_mnist_is_seeded(mnist):
    a, la = load_stacked_mnist(200, seed=0)
    b, lb = load_stacked_mnist(200, seed=0)
    c, _ = load_stacked_mnist(200, seed=1)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    t, lt = load_stacked_mnist(100, split="test", seed=0)
    assert t.shape == (100, 3, 28, 28)
    with pytest.raises(ValueError, match="split"):
        load_stacked_mnist(10, split="valid")


def test_stacked_datamodule_batches(mnist):
    dm = StackedMNISTDataModule(batch_size=64, num_train=3000, val_size=500, num_test=400, seed=0)
    dm.setup("fit")
    assert len(dm.train_set) == 2500 and len(dm.val_set) == 500 and len(dm.test_set) == 400
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 28, 28) and y.shape == (64,)
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.min() >= 0 and y.max() <= 999
    assert dm.image_shape == (3, 28, 28) and dm.num_classes == 1000
    # same seed, same first batch; another seed, another
    dm2 = StackedMNISTDataModule(batch_size=64, num_train=3000, val_size=500, num_test=400, seed=0)
    dm2.setup("fit")
    assert torch.equal(next(iter(dm2.train_dataloader()))[0], x)
    dm3 = StackedMNISTDataModule(batch_size=64, num_train=3000, val_size=500, num_test=400, seed=1)
    dm3.setup("fit")
    assert not torch.equal(next(iter(dm3.train_dataloader()))[0], x)
    # the labels of a batch agree with its channels
    assert torch.equal(dm.train_set[torch.arange(5)][1], dm.train_set.labels[:5])
    # a subset keeps the proportions
    small = StackedMNISTDataModule(subset=1000)
    small.setup("fit")
    assert len(small.train_set) == 1000 and len(small.val_set) == 200 and len(small.test_set) == 200


def test_stacked_datamodule_bad_input():
    with pytest.raises(ValueError, match="num_train"):
        StackedMNISTDataModule(num_train=100, val_size=500)
    with pytest.raises(ValueError, match="batch_size"):
        StackedMNISTDataModule(batch_size=0)


@pytest.mark.cli
def test_autoencoder_trains_on_stacked_mnist(tmp_path, mnist):
    import pytorch_lightning as pl

    from ae_ot.generators import Autoencoder

    model = Autoencoder(channels=3, grid_every_n_epochs=0)
    dm = StackedMNISTDataModule(subset=256, batch_size=64)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert model.sample(4).shape == (4, 3, 28, 28)


def _modes(images, classifier):
    from ae_ot.evaluation import mode_stats

    _, probs = extract_features(images, classifier)
    d = probs.argmax(2)
    return mode_stats(d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2], 1000)


# the real classifier (trained for this alone, ~1 min on 2 cores) only under -m slow
@pytest.mark.parametrize("which, max_kl", [pytest.param("real", 0.05, marks=pytest.mark.slow), ("quick", 0.1)])
@pytest.mark.cli
def test_real_stacked_mnist_covers_the_modes(which, max_kl, request, mnist):
    """PacGAN protocol: 26,000 samples, a mode counts when predicted at least once.

    Counted from the cached per-digit predictions of the test split: a stacked image is classified
    channel by channel, so indexing those predictions by the triples gives exactly its labels (the
    image path is checked to agree on the first 300)."""
    from ae_ot.evaluation import mode_stats
    from ae_ot.evaluation.reference import mnist_split_features

    classifier = request.getfixturevalue(f"{which}_classifier")
    _, probs = mnist_split_features(classifier, "test", mnist)
    triples = stacked_mnist_indices(26000, mnist.test_images.shape[0], seed=0)
    d = probs.argmax(1)[triples]
    stats = mode_stats(d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2], 1000)
    images, _ = load_stacked_mnist(300, split="test", seed=0)
    assert torch.equal(extract_features(images, classifier)[1].argmax(2), d[:300])
    assert stats["modes_covered"] > 990
    assert stats["kl_to_uniform"] < max_kl


@pytest.mark.cli
def test_collapsed_stacked_generator_loses_modes(quick_classifier, mnist):
    images, _ = load_stacked_mnist(3000, split="test", seed=0)
    sevens = mnist.test_images[mnist.test_labels == 7]
    images[:, 0] = sevens[torch.arange(3000) % sevens.shape[0], 0]  # first channel always a 7
    stats = _modes(images, quick_classifier)
    # 100 modes remain; PacGAN's "at least one sample" count adds a few more from the quick
    # classifier's ~3 % mistakes on the 7s, while real data covers ~950 of 1,000 at n = 3,000
    assert stats["modes_covered"] < 300
    assert stats["kl_to_uniform"] > 1.5  # ~ log(10) = 2.3 without mistakes


@pytest.mark.cli
def test_evaluate_samples_on_stacked(quick_classifier):
    from ae_ot.data import load_mnist
    from ae_ot.evaluation import evaluate_samples, get_reference

    reference = get_reference(channels=3, classifier=quick_classifier, splits=load_mnist())
    real, _ = load_stacked_mnist(1000, split="test", seed=0)
    m = evaluate_samples(real, reference=reference)
    assert m["num_modes"] == 1000 and m["mode_min_count"] == 1
    noise = torch.rand(1000, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    n = evaluate_samples(noise, reference=reference)
    assert n["fid_classifier"] > 10 * m["fid_classifier"]
    assert n["precision_k3"] < m["precision_k3"] and n["modes_covered"] < m["modes_covered"]
    with pytest.raises(ValueError, match="channel"):
        evaluate_samples(real[:, :1].contiguous(), reference=reference)


# AE-OT-GAN straight into its GAN stage (autoencoder_epochs=0): encoding, the OT solve, GAN steps
AEOTGAN_QUICK = ["--model.init_args.width=8", "--model.init_args.latent_dim=8", "--model.init_args.critic_width=8",
                 "--model.init_args.autoencoder_epochs=0", "--model.init_args.ot.num_targets=200",
                 "--model.init_args.ot.time_limit=2"]
STACKED_CONFIGS = {
    # model config -> (extra overrides that keep the run to seconds, class name). Each is trained
    # with the Stacked MNIST overlay models/stacked.yaml on top; AE-OT's tuned full config too.
    "ae_ot_stacked": (["--model.init_args.width=8", "--model.init_args.latent_dim=8",
                       "--model.init_args.ot.num_targets=200", "--model.init_args.ot.time_limit=2"], "AEOT"),
    "ae_ot": (["--model.init_args.width=8", "--model.init_args.latent_dim=8",
               "--model.init_args.ot.num_targets=200", "--model.init_args.ot.time_limit=2"], "AEOT"),
    "ae_ot_gan_stacked": (AEOTGAN_QUICK, "AEOTGAN"),
    "ae_ot_gan": (AEOTGAN_QUICK, "AEOTGAN"),
    "wgan": (["--model.init_args.width=8", "--model.init_args.critic_width=8"], "WGAN"),
    "wgan_gp": (["--model.init_args.width=8", "--model.init_args.critic_width=8"], "WGANGP"),
    "sinkhorn": (["--model.init_args.width=8"], "SinkhornGenerator"),
    "minibatch_wasserstein": (["--model.init_args.width=8", "--model.init_args.m=16"], "MinibatchWassersteinGenerator"),
}


@pytest.mark.parametrize("config", sorted(STACKED_CONFIGS))
@pytest.mark.cli
def test_every_model_runs_on_stacked_mnist_by_config(tmp_path, mnist, config):
    """The one Stacked MNIST overlay (models/stacked.yaml) on every model config: a short fit
    through the CLI, then 3-channel samples from the checkpoint."""
    from pathlib import Path

    from ae_ot.checkpoint import load_generator
    from ae_ot.cli import main

    extra, cls_name = STACKED_CONFIGS[config]
    repo = Path(__file__).resolve().parents[1]
    main(["fit", "--config", str(repo / "models" / f"{config}.yaml"), "--config", str(repo / "models" / "stacked.yaml"),
          *extra, "--data.subset=512",
          "--data.batch_size=32", "--trainer.max_epochs=1", "--trainer.limit_train_batches=6",
          "--trainer.limit_val_batches=2", f"--trainer.default_root_dir={tmp_path}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    ckpt = next((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    model = load_generator(ckpt)
    assert type(model).__name__ == cls_name
    images = model.sample(6, seed=0)
    assert images.shape == (6, 3, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
