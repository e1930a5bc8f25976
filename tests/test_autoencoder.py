"""The autoencoder LightningModule and the Lightning CLI around it."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from ae_ot.data import MNISTDataModule
from ae_ot.generators import Autoencoder

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.cli
def test_fast_dev_run():
    model = Autoencoder(latent_dim=8)
    trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False)
    trainer.fit(model, MNISTDataModule(subset=512, batch_size=64))
    images = model.sample(5, seed=1)
    assert images.shape == (5, 1, 28, 28)
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, model.sample(5, seed=1))


@pytest.mark.cli
def test_learns_to_reconstruct(tmp_path):
    pl.seed_everything(0)
    model = Autoencoder(latent_dim=16)
    dm = MNISTDataModule(subset=8000, batch_size=64)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(model, dm)
    result = trainer.test(model, dm, verbose=False)[0]
    # the mean image alone gives MSE ~0.067 on MNIST; a working autoencoder is far below
    assert result["test/mse"] < 0.04
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "images" / "reconstructions_epoch001.png").is_file()


def test_bad_latent_dim():
    import pytest

    with pytest.raises(ValueError, match="latent_dim"):
        Autoencoder(latent_dim=0)


@pytest.mark.slow   # 20 s of subprocesses; the CLI's fit runs in the default suite in test_kill.py and test_stacked_mnist.py
def test_cli_fit_saves_config_and_test_reports_mse(tmp_path, cli):
    out = cli("fit", "--config", "models/autoencoder.yaml", "--trainer.max_epochs=1", "--data.subset=1000",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["class_path"].endswith("Autoencoder")
    assert config["trainer"]["max_epochs"] == 1 and config["data"]["init_args"]["subset"] == 1000
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    out = cli("test", "--config", "models/autoencoder.yaml", "--data.subset=1000", f"--ckpt_path={ckpt}",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/mse" in out.stdout


def _main(capsys, *args):
    """``ae-ot ARGS`` in this process (ae_ot.cli.main, what `python -m ae_ot` runs; one real
    subprocess start is test_cli_fit_saves_config_and_test_reports_mse): (exit code, stdout, stderr)."""
    from ae_ot.cli import main

    code = 0
    try:
        main([args[0], "--config", str(REPO / "models" / "autoencoder.yaml"), *args[1:]])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.cli
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_cli_print_config_and_model_override(capsys):
    code, stdout, stderr = _main(capsys, "fit", "--model", "Autoencoder", "--model.latent_dim=4", "--print_config")
    assert code in (0, None), stderr[-2000:]
    config = yaml.safe_load(stdout)
    assert config["model"]["init_args"]["latent_dim"] == 4


@pytest.mark.cli
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_cli_bad_values_give_clear_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _main(capsys, "fit", "--model.latent_dim=0", "--trainer.max_epochs=1")
    assert code not in (0, None)
    assert "latent_dim must be a positive integer" in stderr
    assert "Traceback" not in stderr

    code, _, stderr = _main(capsys, "fit", "--data.batch_size=-5", "--trainer.max_epochs=1")
    assert code not in (0, None)
    assert "batch_size must be positive" in stderr
    assert "Traceback" not in stderr

    code, _, stderr = _main(capsys, "fit", "--model", "NoSuchGenerator")
    assert code not in (0, None)
    assert "NoSuchGenerator" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "lightning_logs").exists()
