"""Fault injection: a full disk, read-only folders, checkpoints of another run or of garbage, and bad
command input. Each case asserts the outcome: the work finished correctly, or it stopped with one
line that states the fix, and no file written earlier was damaged.

A full disk is a patched :func:`ae_ot.io.atomic_write` whose writer runs, then keeps half of what it
wrote and raises ENOSPC (a real small tmpfs needs root mounts). The tests run as root in CI, where
``chmod`` does not stop a write: there a read-only folder is simulated by patching ``os.replace`` /
``os.access`` to refuse it, as the kernel would for another user. Tiny problems on the torch kernel
(the fused one would compile first), fake Lightning checkpoints (``torch.save``), no training: the
module runs in well under a minute on 2 cores. ``kill -9`` during an AE-OT fit, which needs real
fits, is tests/test_kill.py.
"""

import errno
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ae_ot.io
import ae_ot.viz
from ae_ot.checks import UserInputError

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails half-way: the writer runs, half of its bytes stay, then ENOSPC."""
    import ae_ot.lightning_io  # imported before the patch, or it would bind the patched writer for good

    real = ae_ot.io.atomic_write

    def atomic_write(path, write):
        def half_then_full(tmp):
            write(tmp)
            data = Path(tmp).read_bytes()
            Path(tmp).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, half_then_full)

    monkeypatch.setattr(ae_ot.io, "atomic_write", atomic_write)
    monkeypatch.setattr(ae_ot.viz, "atomic_write", atomic_write)
    monkeypatch.setattr(ae_ot.lightning_io, "atomic_write", atomic_write)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: make ``folder`` refuse new files (chmod, or a patched os.replace and
    os.access when running as root, where chmod does not bind)."""
    folders = []
    real_replace, real_access = os.replace, os.access

    def inside(path) -> bool:
        return any(Path(path).resolve().parent == f or Path(path).resolve() == f for f in folders)

    def replace(src, dst, *args, **kwargs):
        if inside(dst):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve() in folders:
            return False
        return real_access(path, mode, *args, **kwargs)

    def make(folder: Path) -> None:
        folders.append(Path(folder).resolve())
        if AS_ROOT:
            monkeypatch.setattr(os, "replace", replace)
            monkeypatch.setattr(os, "access", access)
        else:
            folder.chmod(0o555)

    yield make
    for folder in folders:
        folder.chmod(0o755)


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def fake_generator_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint of a tiny WGAN written with torch.save (no training)."""
    import pytorch_lightning as pl

    from ae_ot.generators import WGAN

    model = WGAN(latent_dim=4, width=4)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__, "generator_class_path": "ae_ot.generators.WGAN"}, path)
    return path


def one_line(message: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message


# --------------------------------------------------------------------------------------------
# a full disk: the previous file stays whole, no temporary file is left
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npy", ".pt", ".png", ".jpg"])
def test_sample_output_survives_a_full_disk(tmp_path, full_disk, suffix):
    from ae_ot.commands.sample import write_samples

    output = tmp_path / f"samples{suffix}"
    output.write_bytes(b"the previous samples")
    with pytest.raises(OSError) as err:
        write_samples(torch.rand(4, 1, 28, 28), output)
    assert err.value.errno == errno.ENOSPC
    assert output.read_bytes() == b"the previous samples"
    assert temp_files(tmp_path) == []


def test_sample_output_is_written_whole_when_the_disk_has_room(tmp_path):
    from ae_ot.commands.sample import write_samples

    images = torch.rand(4, 1, 28, 28)
    write_samples(images, tmp_path / "s.npy")
    write_samples(images, tmp_path / "s.png")
    assert np.array_equal(np.load(tmp_path / "s.npy"), images.numpy())
    from PIL import Image

    with Image.open(tmp_path / "s.png") as image:
        assert image.format == "PNG" and image.size == (2 * (2 * 30 + 2), 2 * (2 * 30 + 2))
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("writer", ["grid", "figure_png", "figure_pdf", "quantize"])
def test_pictures_survive_a_full_disk(tmp_path, full_disk, writer):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.viz import quantize_png, save_figure, save_image_grid

    suffix = ".pdf" if writer == "figure_pdf" else ".png"
    path = tmp_path / f"picture{suffix}"
    path.write_bytes(b"the previous picture")
    fig = plt.figure(figsize=(1, 1))
    try:
        with pytest.raises(OSError, match="No space left"):
            if writer == "grid":
                save_image_grid(torch.rand(4, 1, 8, 8), path)
            elif writer == "quantize":
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png")
                buffer.seek(0)
                quantize_png(buffer, path)
            else:
                save_figure(fig, path)
    finally:
        plt.close(fig)
    assert path.read_bytes() == b"the previous picture"
    assert temp_files(tmp_path) == []


def test_solver_checkpoint_survives_a_full_disk(tmp_path, monkeypatch):
    from ae_ot.ot import SemiDiscreteOT

    y = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    ck = tmp_path / "ck.pt"
    fit = {"batch_size": 256, "eval_samples": 1 << 14, "progress": False, "checkpoint_path": ck}
    SemiDiscreteOT(y, seed=1, backend="torch").fit(max_steps=4, **fit)
    before = ck.read_bytes()
    real = ae_ot.io.atomic_write

    def full(path, write):
        def half(tmp):
            write(tmp)
            Path(tmp).write_bytes(Path(tmp).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, half)

    monkeypatch.setattr(ae_ot.io, "atomic_write", full)
    with pytest.raises(OSError, match="No space left"):
        SemiDiscreteOT(y, seed=1, backend="torch").fit(max_steps=8, checkpoint_every=1, **fit)
    assert ck.read_bytes() == before and temp_files(tmp_path) == []
    monkeypatch.setattr(ae_ot.io, "atomic_write", real)
    # the disk has room again: the run resumes from the intact checkpoint and finishes
    report = SemiDiscreteOT(y, seed=1, backend="torch").fit(max_steps=8, **fit)
    assert report.steps == 8 and torch.load(ck, weights_only=False)["fit_state"]["step"] == 8


# --------------------------------------------------------------------------------------------
# read-only folders
# --------------------------------------------------------------------------------------------
def test_a_read_only_folder_keeps_the_previous_file(tmp_path, read_only):
    from ae_ot.viz import save_image_grid

    folder = tmp_path / "ro"
    folder.mkdir()
    output = folder / "grid.png"
    output.write_bytes(b"the previous grid")
    read_only(folder)
    with pytest.raises(PermissionError):  # a writer without an up-front check: the write itself fails
        save_image_grid(torch.rand(2, 1, 28, 28), output)
    assert output.read_bytes() == b"the previous grid"
    assert temp_files(folder) == []


def test_outputs_in_a_read_only_folder_are_refused_up_front(tmp_path, read_only):
    from ae_ot.io import check_writable_path

    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(UserInputError, match=r"cannot write --output .*ro/m.json: the folder .*ro is not writable; "
                                             r"give a path in a writable folder"):
        check_writable_path(folder / "m.json", "--output")
    with pytest.raises(UserInputError, match="ro is not writable"):
        check_writable_path(folder / "new" / "deeper" / "m.json", "--output")
    assert check_writable_path(tmp_path / "new" / "m.json", "--output") == tmp_path / "new" / "m.json"
    assert not (tmp_path / "new").exists()  # a check creates nothing


# --------------------------------------------------------------------------------------------
# the solver's checkpoint: another problem, another seed, garbage
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, expected", [
    ("targets", "was written for other targets"),
    ("weights", "was written for other weights"),
    ("seed", "was written with seed=1, this solver has seed=2"),
    ("max_steps", "holds a run of 4 steps, more than max_steps=2"),
])
def test_solver_refuses_a_checkpoint_of_another_run(tmp_path, change, expected):
    from ae_ot.ot import SemiDiscreteOT

    y = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    ck = tmp_path / "ck1.pt"
    fitted = SemiDiscreteOT(y, seed=1, backend="torch")
    fitted.fit(max_steps=4, batch_size=256, progress=False, checkpoint_path=ck)
    before = ck.read_bytes()
    weights = torch.arange(1, 31, dtype=torch.float64)
    ot = SemiDiscreteOT(y + (0.01 if change == "targets" else 0), seed=2 if change == "seed" else 1,
                        weights=weights / weights.sum() if change == "weights" else None, backend="torch")
    with pytest.raises(UserInputError) as err:
        ot.fit(max_steps=2 if change == "max_steps" else 4, batch_size=256, progress=False, checkpoint_path=ck)
    message = str(err.value)
    one_line(message)
    assert expected in message and f"checkpoint {ck}" in message
    assert message.endswith("delete it or pass another checkpoint_path") or "to start afresh" in message
    assert ck.read_bytes() == before
    if change != "max_steps":  # never silently the old heights
        assert not torch.equal(ot.heights, fitted.heights)


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", "truncated", "foreign"])
def test_solver_refuses_a_garbage_checkpoint_with_one_line(tmp_path, content):
    from ae_ot.ot import SemiDiscreteOT

    y = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    ck = tmp_path / "ck.pt"
    if content == "truncated":
        SemiDiscreteOT(y, seed=1, backend="torch").fit(max_steps=2, batch_size=256, progress=False, checkpoint_path=ck)
        ck.write_bytes(ck.read_bytes()[:500])
    elif content == "foreign":
        torch.save({"a": 1}, ck)
    else:
        ck.write_bytes(content)
    before = ck.read_bytes()
    with pytest.raises(UserInputError, match=r"delete it or pass another checkpoint_path") as err:
        SemiDiscreteOT(y, seed=1, backend="torch").fit(max_steps=2, batch_size=256, progress=False, checkpoint_path=ck)
    one_line(str(err.value))
    assert str(ck) in str(err.value) and ck.read_bytes() == before


# --------------------------------------------------------------------------------------------
# commands: bad input refused before the work starts
# --------------------------------------------------------------------------------------------
@pytest.fixture
def no_evaluation(monkeypatch):
    """Any evaluation (loading a model, the classifier) fails the test: the input was bad."""
    from ae_ot.commands import evaluate

    def fail(*args, **kwargs):
        raise AssertionError("the work started although the input was bad")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fail)
    monkeypatch.setattr(evaluate, "evaluate_real", fail)
    monkeypatch.setattr("ae_ot.checkpoint.load_generator", fail)
    return fail


def test_evaluate_refuses_a_grid_or_output_it_cannot_write_before_computing(tmp_path, no_evaluation):
    from ae_ot.commands import evaluate

    (tmp_path / "a_file").write_text("x")
    previous = tmp_path / "m.json"
    previous.write_text("previous metrics")
    cases = [(["--grid", str(tmp_path / "g.npy")], r"cannot write --grid .*g.npy: the suffix '.npy' is not an "
                                                    r"image format; use one of .*\.png"),
             (["--grid", str(tmp_path / "g")], r"the suffix '\(none\)' is not an image format"),
             (["--output", str(tmp_path / "a_file" / "m.json")], r"a_file is a file, not a folder"),
             (["--output", str(tmp_path)], r"is a folder; give a file path inside it"),
             (["--output", str(previous), "--grid", str(tmp_path / "a_file" / "g.png")], r"a_file is a file")]
    for extra, message in cases:
        with pytest.raises(UserInputError, match=message) as err:
            evaluate.main(["--ckpt_path", "any.ckpt", "--num_samples", "10", *extra])
        one_line(str(err.value))
    assert previous.read_text() == "previous metrics"


@pytest.mark.cli
def test_evaluate_on_the_command_line_says_one_line(cli, tmp_path):
    """The one real `python -m ae_ot` start of this module (the entry point, stderr of a process);
    the other command-line refusals run ae_ot.cli.main in this process."""
    proc = cli("evaluate", "--real", "test", "--grid", str(tmp_path / "g.npy"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "g.npy: the suffix '.npy' is not an image format" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def read_only_cache_folder(tmp_path, monkeypatch, read_only):
    """An empty read-only folder tmp_path/cache that cannot hold files, for root too."""
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only(cache)
    if AS_ROOT:  # root writes into a chmod-ed folder: refuse the probe file as the kernel would
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(ae_ot.io.tempfile, "TemporaryFile", refuse)
    return cache


@pytest.mark.parametrize("kind", ["file", "read_only"])
def test_an_unusable_cache_is_refused_before_the_classifier_trains(tmp_path, monkeypatch, read_only, kind):
    from ae_ot.evaluation import classifier

    if kind == "file":
        cache = tmp_path / "cache_file"
        cache.write_text("not a folder")
        expected = r"is a file, not a folder; point AE_OT_CACHE at a writable folder"
    else:
        cache = read_only_cache_folder(tmp_path, monkeypatch, read_only)
        expected = r"cannot hold files \(PermissionError: Permission denied\); point AE_OT_CACHE at a writable folder"
    monkeypatch.setenv("AE_OT_CACHE", str(cache))

    def train(*args, **kwargs):
        raise AssertionError("trained although the cache cannot hold the result")

    monkeypatch.setattr(classifier, "train_classifier", train)
    splits = SimpleNamespace(train_images=torch.rand(8, 1, 28, 28), train_labels=torch.arange(8) % 10)
    with pytest.raises(UserInputError, match=expected) as err:
        classifier.get_classifier(progress=False, splits=splits, subset=8, epochs=1)
    assert f"AE_OT_CACHE={str(cache)!r}" in str(err.value)
    one_line(str(err.value))
    if kind == "file":
        assert cache.read_text() == "not a folder"


def test_compare_checks_every_checkpoint_before_evaluating_the_first(tmp_path, no_evaluation):
    from ae_ot.commands import compare

    good = fake_generator_checkpoint(tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:300])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"a": 1}, foreign)
    out = tmp_path / "out"
    for bad, message in [(truncated, "corrupt, truncated or not a PyTorch file"),
                         (foreign, "is not a Lightning checkpoint")]:
        with pytest.raises(UserInputError, match=message) as err:
            compare.main(["--ckpt_paths", str(good), str(bad), "--num_samples", "10", "--output_dir", str(out)])
        assert str(bad) in str(err.value)
    assert not out.exists()


def test_umap_refuses_an_output_it_cannot_write_before_loading(tmp_path, no_evaluation, read_only):
    pytest.importorskip("umap")
    from ae_ot.commands import umap

    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(UserInputError, match="ro is not writable") as err:
        umap.main(["--ckpt_path", "any.ckpt", "--output", str(folder / "umap.png")])
    one_line(str(err.value))
    with pytest.raises(UserInputError, match="unknown figure suffix"):
        umap.main(["--ckpt_path", "any.ckpt", "--output", str(tmp_path / "umap.npy")])


@pytest.mark.parametrize("content", ["truncated", "foreign"])
def test_fit_refuses_a_bad_ckpt_path_with_one_line(tmp_path, content, capsys, monkeypatch):
    """In this process (ae_ot.cli.main, as `python -m ae_ot` runs it): the file is read before
    Lightning starts, so any other exception than the exit with one line fails the test."""
    from ae_ot.cli import main

    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / f"{content}.ckpt"
    if content == "truncated":
        ckpt.write_bytes(b"\x80\x02" + b"x" * 100)
        expected = "corrupt, truncated or not a PyTorch file"
    else:
        torch.save({"a": 1}, ckpt)
        expected = "is not a Lightning checkpoint (no 'state_dict' entry)"
    config = str(Path(__file__).resolve().parents[1] / "models" / "autoencoder.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", config, "--ckpt_path", str(ckpt)])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert expected in stderr and str(ckpt) in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lightning_logs").exists()


# --------------------------------------------------------------------------------------------
# load_generator: input problems are one line, bugs keep their traceback
# --------------------------------------------------------------------------------------------
def test_load_generator_reports_mismatched_checkpoints_and_keeps_bugs(tmp_path, monkeypatch):
    from ae_ot.checkpoint import load_generator
    from ae_ot.generators import WGAN

    good = fake_generator_checkpoint(tmp_path / "good.ckpt")
    assert isinstance(load_generator(good), WGAN)
    checkpoint = torch.load(good, weights_only=False)
    mismatched = {
        "shape": dict(checkpoint, hyper_parameters={**checkpoint["hyper_parameters"], "width": 8}),
        "missing": dict(checkpoint, state_dict=dict(list(checkpoint["state_dict"].items())[1:])),
        "no_version": {k: v for k, v in checkpoint.items() if k != "pytorch-lightning_version"},
    }
    for name, content in mismatched.items():
        torch.save(content, tmp_path / f"{name}.ckpt")
        with pytest.raises(UserInputError, match=f"cannot restore ae_ot.generators.WGAN from checkpoint .*{name}.ckpt"):
            load_generator(tmp_path / f"{name}.ckpt")

    def bug(self, checkpoint):
        raise ZeroDivisionError("a bug in a generator")

    monkeypatch.setattr(WGAN, "on_load_checkpoint", bug)
    with pytest.raises(ZeroDivisionError, match="a bug in a generator"):
        load_generator(good)


# --------------------------------------------------------------------------------------------
# the fused kernel's cache
# --------------------------------------------------------------------------------------------
def test_an_unwritable_kernel_cache_warns_once_with_the_reason(tmp_path, monkeypatch):
    from ae_ot.ot import fused

    if fused._compiler() is None:
        pytest.skip("no C++ compiler: the kernel is off before any cache is touched")
    cache = tmp_path / "cache_file"
    cache.write_text("not a folder")
    monkeypatch.setenv("AE_OT_CACHE", str(cache))
    fused._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"fused CPU kernel is off.*kernel cache .*cache_file/kernels cannot "
                                                 r"hold files.*point AE_OT_CACHE at a writable folder"):
            assert not fused.fused_available()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not fused.fused_available()  # said once
        assert "cannot hold files" in fused.fused_build_error()
        assert cache.read_text() == "not a folder"
    finally:
        fused._library.cache_clear()  # the next user builds or loads it from the session's cache


def test_sample_refuses_an_output_in_a_read_only_folder_before_loading(tmp_path, no_evaluation, read_only):
    from ae_ot.commands import sample

    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(UserInputError, match="ro is not writable") as err:
        sample.main(["--ckpt_path", "any.ckpt", "--output", str(folder / "s.png")])
    one_line(str(err.value))


# --------------------------------------------------------------------------------------------
# Lightning's own writes: checkpoints and the run's config.yaml (ae_ot.lightning_io)
# --------------------------------------------------------------------------------------------
def cli_without_running(tmp_path, *args):
    """The ``ae-ot fit`` LightningCLI, built (model, data, trainer) but not run."""
    import sys

    from ae_ot.cli import lightning_cli_class

    saved, sys.argv = sys.argv, ["ae-ot"]       # LightningCLI warns when sys.argv holds other arguments
    try:
        return lightning_cli_class()(run=False, args=[
            "--model=ae_ot.generators.WGAN", "--model.latent_dim=4", "--model.width=4", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}", *args])
    finally:
        sys.argv = saved


def fail_torch_save_half_way(monkeypatch) -> None:
    """From now on torch.save writes the first half of the file, then the disk is full (ENOSPC)."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def test_a_checkpoint_write_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from ae_ot.checkpoint import load_generator
    from ae_ot.generators import WGAN
    from ae_ot.lightning_io import AtomicCheckpointIO

    cli = cli_without_running(tmp_path)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # the default of `ae-ot fit`
    cli.trainer.strategy.connect(cli.model)
    ckpt = tmp_path / "checkpoints" / "epoch=0-step=1.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    before = ckpt.read_bytes()
    with torch.no_grad():
        next(cli.model.parameters()).add_(1.0)   # the new checkpoint differs
    with monkeypatch.context() as patch:
        fail_torch_save_half_way(patch)
        with pytest.raises(OSError, match="No space left"):
            cli.trainer.save_checkpoint(ckpt)
    assert ckpt.read_bytes() == before and temp_files(ckpt.parent) == []
    assert isinstance(load_generator(ckpt), WGAN)
    cli.trainer.save_checkpoint(ckpt)   # the disk has room again: the new one, whole
    assert ckpt.read_bytes() != before and isinstance(load_generator(ckpt), WGAN)


def test_a_checkpoint_io_of_the_users_own_stands(tmp_path):
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    from ae_ot.lightning_io import AtomicCheckpointIO, with_atomic_checkpoint_io

    cli = cli_without_running(tmp_path, "--trainer.plugins=pytorch_lightning.plugins.io.TorchCheckpointIO")
    assert type(cli.trainer.strategy.checkpoint_io) is TorchCheckpointIO
    other = object()
    assert [type(p) for p in with_atomic_checkpoint_io(None)] == [AtomicCheckpointIO]
    assert with_atomic_checkpoint_io(other)[0] is other and isinstance(with_atomic_checkpoint_io([other])[1],
                                                                        AtomicCheckpointIO)


def test_the_run_config_survives_a_full_disk(tmp_path, full_disk):
    from ae_ot.lightning_io import AtomicSaveConfigCallback

    cli = cli_without_running(tmp_path)
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, AtomicSaveConfigCallback))
    config = tmp_path / "config.yaml"
    config.write_text("the previous config")
    with pytest.raises(OSError, match="No space left"):
        callback.setup(cli.trainer, cli.model, "fit")
    assert config.read_text() == "the previous config" and temp_files(tmp_path) == []


def test_the_run_config_is_written_whole(tmp_path):
    import yaml

    from ae_ot.lightning_io import AtomicSaveConfigCallback

    cli = cli_without_running(tmp_path)
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, AtomicSaveConfigCallback))
    (tmp_path / "config.yaml").write_text("the previous config")   # `ae-ot fit` overwrites it
    callback.setup(cli.trainer, cli.model, "fit")
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["model"]["class_path"] == "ae_ot.generators.WGAN" and config["model"]["init_args"]["width"] == 4
    assert temp_files(tmp_path) == [] and callback.parser is not None and not hasattr(callback.parser, "_parser")


# every file write of the package goes through ae_ot.io.atomic_write: the one place that writes in place is
# ae_ot/io.py itself (the temporary file); streamed log files and in-memory buffers are not files to read back;
# SemiDiscreteSolution.save is atomic itself (tests/test_ot_resume.py)
WRITE_CALL = r"\.write_text\(|\.write_bytes\(|json\.dump\(|np\.savez?\(|torch\.save\(|\.savefig\(|\.save\(|" \
             r"open\([^)]*[\"'](w|wb|a|ab|x)[\"']"
NOT_A_FILE_TO_READ_BACK = ('open(log_path, "w")', "savefig(buffer", "save(buffer", "ot.save(checkpoint)", "solution.save(")


def test_every_file_the_package_writes_goes_through_the_atomic_writer():
    import re

    package = Path(__file__).resolve().parents[1] / "ae_ot"
    in_place = []
    for source in sorted(package.rglob("*.py")):
        if source.name == "io.py" and source.parent == package:
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if (re.search(WRITE_CALL, line) and "atomic_write(" not in line
                    and not any(allowed in line for allowed in NOT_A_FILE_TO_READ_BACK)):
                in_place.append(f"{source.relative_to(package.parent)}:{number}: {line.strip()}")
    assert in_place == [], "written in place, not through ae_ot.io.atomic_write:\n" + "\n".join(in_place)


# --------------------------------------------------------------------------------------------
# latent-compare, compare and umap: wrong files, unwritable outputs, a read-only cache
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aeot_checkpoints(tmp_path_factory):
    """Checkpoints of a tiny AE-OT model, one with an OT solution and one without, and of a WGAN, a
    truncated and a foreign file (torch.save, no training): {name: path}."""
    import pytorch_lightning as pl

    from ae_ot.generators import AEOT

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = AEOT(latent_dim=4, width=4, ot=dict(time_limit=None, max_steps=5, backend="torch", eval_samples=4096))
    paths = {}
    for name in ("unsolved", "solved"):
        if name == "solved":
            model.solve_ot(torch.randn(40, 4), progress=False)
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                      "pytorch-lightning_version": pl.__version__}
        model.on_save_checkpoint(checkpoint)
        paths[name] = folder / f"{name}.ckpt"
        torch.save(checkpoint, paths[name])
    paths["wgan"] = fake_generator_checkpoint(folder / "wgan.ckpt")
    paths["truncated"] = folder / "truncated.ckpt"
    paths["truncated"].write_bytes(paths["solved"].read_bytes()[:400])
    paths["foreign"] = folder / "foreign.ckpt"
    torch.save({"a": 1}, paths["foreign"])
    return paths


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Training a flow, a classifier or a compare's models, evaluating, or encoding a dataset fails
    the test (loading a checkpoint to check it is allowed)."""
    from ae_ot.commands import evaluate, umap
    from ae_ot.evaluation import classifier
    from ae_ot.experiments import checkpoints, comparison, latent_comparison, resume

    def fail(*args, **kwargs):
        raise AssertionError("the work started although the input was bad")

    for module, name in [(latent_comparison, "train_flow"), (latent_comparison, "compare_latent_samplers"),
                         (classifier, "train_classifier"), (umap, "latent_gap_report"),
                         (resume, "train_with_budget"), (comparison, "checkpoint_rows"),
                         (checkpoints, "evaluate_checkpoint"), (checkpoints, "evaluate_real"),
                         (evaluate, "evaluate_checkpoint"), (evaluate, "evaluate_real")]:
        monkeypatch.setattr(module, name, fail)


FLOW_CONFIG = ["--flow_config", str(Path(__file__).resolve().parents[1] / "models" / "latent_flow.yaml")]


WRONG_FILES = [("truncated", "corrupt, truncated or not a PyTorch file"),
               ("foreign", "is not a Lightning checkpoint"),
               ("wgan", "holds a WGAN checkpoint; it must be a AEOT checkpoint"),
               ("missing", "does not exist")]


@pytest.mark.parametrize("kind, message", WRONG_FILES + [("unsolved", "AE-OT checkpoint with an OT solution")])
def test_latent_compare_refuses_a_wrong_checkpoint_before_the_work(tmp_path, aeot_checkpoints, no_heavy_work, kind,
                                                                    message):
    from ae_ot.commands import latent_compare

    ckpt = aeot_checkpoints.get(kind, tmp_path / "missing.ckpt")
    out = tmp_path / "out"
    with pytest.raises((UserInputError, FileNotFoundError), match=message) as err:
        latent_compare.main(["--ckpt_path", str(ckpt), "--output_dir", str(out), "--no_progress", *FLOW_CONFIG])
    one_line(str(err.value))
    assert str(ckpt) in str(err.value) and not out.exists()


@pytest.mark.parametrize("slot", ["ot_cfm", "independent_cfm"])
def test_latent_compare_refuses_a_wrong_flow_before_training_the_other(tmp_path, aeot_checkpoints, no_heavy_work,
                                                                       slot):
    from ae_ot.commands import latent_compare

    out = tmp_path / "out"
    argv = ["--ckpt_path", str(aeot_checkpoints["solved"]), "--output_dir", str(out), "--no_progress", *FLOW_CONFIG]
    for flow, message in [(aeot_checkpoints["wgan"], f"--{slot}_ckpt .*wgan.ckpt holds a WGAN checkpoint; it must "
                                                     "be a LatentFlowMatching checkpoint"),
                          (aeot_checkpoints["solved"], "holds a AEOT checkpoint; it must be a LatentFlowMatching")]:
        with pytest.raises(UserInputError, match=message) as err:
            latent_compare.main([*argv, f"--{slot}_ckpt", str(flow)])
        one_line(str(err.value))
    assert not out.exists()


def test_latent_compare_refuses_an_output_folder_it_cannot_write(tmp_path, aeot_checkpoints, no_heavy_work, read_only):
    from ae_ot.commands import latent_compare

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "latent_compare.md").write_text("the previous report")
    read_only(folder)
    (tmp_path / "a_file").write_text("x")
    for out, message in [(folder, "the folder .*ro is not writable"), (tmp_path / "a_file", "a_file is a file")]:
        with pytest.raises(UserInputError, match=message) as err:
            latent_compare.main(["--ckpt_path", str(aeot_checkpoints["solved"]), "--output_dir", str(out),
                                 *FLOW_CONFIG])
        one_line(str(err.value))
    assert (folder / "latent_compare.md").read_text() == "the previous report"
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.fixture
def read_only_empty_cache(tmp_path, monkeypatch, read_only):
    """AE_OT_CACHE is an empty read-only folder (no classifier cached)."""
    cache = read_only_cache_folder(tmp_path, monkeypatch, read_only)
    monkeypatch.setenv("AE_OT_CACHE", str(cache))
    import ae_ot.evaluation.classifier as classifier

    monkeypatch.setattr(classifier, "_LOADED", {})   # nothing in memory either
    return cache


def test_latent_compare_refuses_a_read_only_cache_before_training_flows(tmp_path, aeot_checkpoints, no_heavy_work,
                                                                       read_only_empty_cache):
    from ae_ot.commands import latent_compare

    with pytest.raises(UserInputError, match="cannot hold files.*point AE_OT_CACHE at a writable folder") as err:
        latent_compare.main(["--ckpt_path", str(aeot_checkpoints["solved"]), "--output_dir", str(tmp_path / "out"),
                             "--no_progress", *FLOW_CONFIG])
    one_line(str(err.value))


def test_compare_refuses_an_output_folder_it_cannot_write_or_a_read_only_cache(tmp_path, aeot_checkpoints,
                                                                              no_heavy_work, read_only,
                                                                              read_only_empty_cache):
    from ae_ot.commands import compare

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "compare.md").write_text("the previous table")
    read_only(folder)
    (tmp_path / "a_file").write_text("x")
    argv = ["--ckpt_paths", str(aeot_checkpoints["solved"]), "--num_samples", "10", "--no_progress"]
    for out, message in [(folder, "cannot write --output_dir .*ro/compare.md: the folder .*ro is not writable"),
                         (tmp_path / "a_file", "a_file is a file, not a folder"),
                         (tmp_path / "out", "cannot hold files.*point AE_OT_CACHE at a writable folder")]:
        with pytest.raises(UserInputError, match=message) as err:
            compare.main([*argv, "--output_dir", str(out)])
        one_line(str(err.value))
    assert (folder / "compare.md").read_text() == "the previous table" and (tmp_path / "a_file").read_text() == "x"


def test_compare_refuses_an_unsolved_aeot_checkpoint_before_evaluating_the_first(tmp_path, aeot_checkpoints,
                                                                                  no_heavy_work):
    from ae_ot.commands import compare

    argv = ["--ckpt_paths", str(aeot_checkpoints["solved"]), str(aeot_checkpoints["unsolved"]), "--num_samples", "10",
            "--no_progress", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(UserInputError, match="without an OT solution; give an AE-OT checkpoint with an OT solution, "
                                             "or solve this one first") as err:
        compare.main(argv)
    one_line(str(err.value))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, message", WRONG_FILES[:2] + [("missing", "does not exist"),
                                                            ("wgan", "holds a WGAN; `ae-ot umap` needs an AE-OT"),
                                                            ("unsolved", "without an OT solution; solve it first")])
def test_umap_refuses_a_wrong_checkpoint_before_encoding(tmp_path, aeot_checkpoints, no_heavy_work, kind, message):
    pytest.importorskip("umap")
    from ae_ot.commands import umap

    ckpt = aeot_checkpoints.get(kind, tmp_path / "missing.ckpt")
    output = tmp_path / "umap.png"
    output.write_bytes(b"the previous figure")
    with pytest.raises((UserInputError, FileNotFoundError), match=message) as err:
        umap.main(["--ckpt_path", str(ckpt), "--output", str(output)])
    one_line(str(err.value))
    assert output.read_bytes() == b"the previous figure"
