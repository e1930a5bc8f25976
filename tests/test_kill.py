"""``kill -9`` at each stage of an AE-OT fit, then a resume (issue 29).

Each case runs ``ae-ot fit`` (a tiny models/ae_ot.yaml: 400 training images, 2 epochs, a 10-step
OT solve) in a child process forked from the test process, so no interpreter start and import per
run. The child replaces one function at a stage boundary with ``SIGKILL`` to itself: nothing after
it runs (no ``finally``, no ``atexit``), as with ``kill -9``. The stages: the autoencoder's second
epoch, the encoding of the training set, the OT solve, and the write of the solved checkpoint
(between the complete temporary file and its rename onto the target).

Each case then asserts the outcome: every file the killed run left is whole (its checkpoints load),
the run resumed with ``--ckpt_path`` on its newest checkpoint finishes in its own folder with a
checkpoint whose sampler is solved, ``ae-ot sample`` draws from it, and no file of the killed run
changed (byte-identical).
"""

import hashlib
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
OT_STEPS = 10
EPOCHS = 2
STEPS_PER_EPOCH = 2     # 400 training images in batches of 256


def fit_args(root: Path) -> list[str]:
    return ["fit", "--config", str(REPO / "models" / "ae_ot.yaml"), "--data.init_args.subset=500",
            "--data.init_args.val_size=100", f"--trainer.max_epochs={EPOCHS}", "--model.init_args.grid_size=16",
            f'--model.init_args.ot={{"time_limit": null, "max_steps": {OT_STEPS}, "eval_samples": 4096, '
            '"backend": "torch"}', "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            f"--trainer.default_root_dir={root}"]


def run_fit(argv: list[str]) -> None:
    """``ae-ot fit ARGV`` in this process (LightningCLI reads sys.argv: it holds only the command)."""
    from ae_ot.cli import main

    saved, sys.argv = sys.argv, ["ae-ot"]
    try:
        main(argv)
    finally:
        sys.argv = saved


def kill_me(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(stage: str) -> None:
    """Make the fit of this (child) process kill itself at ``stage``."""
    from ae_ot.generators import AEOT
    from ae_ot.ot import SemiDiscreteOT

    if stage == "autoencoder":
        step = AEOT.training_step

        def training_step(self, *args, **kwargs):
            if self.current_epoch == EPOCHS - 1:        # the first epoch's checkpoint is on disk
                kill_me()
            return step(self, *args, **kwargs)

        AEOT.training_step = training_step
    elif stage == "encoding":
        AEOT.encode_dataset = kill_me
    elif stage == "ot":
        SemiDiscreteOT.fit = kill_me
    elif stage == "checkpoint_write":
        replace = os.replace

        def replace_unless_solved(src, dst, *args, **kwargs):
            if str(dst).endswith(".ckpt") and torch.load(src, weights_only=False)["state_dict"]["sampler.heights"].numel():
                kill_me()                                # the solved checkpoint is whole, not yet renamed
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_unless_solved
    else:
        raise ValueError(stage)


def killed_child(stage: str, argv: list[str]) -> None:
    torch.set_num_threads(1)   # the parent's thread pool does not survive a fork
    install_kill(stage)
    run_fit(argv)


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoints(root: Path) -> list[Path]:
    """The run's checkpoints, newest last (hidden temporary files of a killed write excluded)."""
    return sorted((p for p in root.rglob("*.ckpt") if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def imported():
    """Lightning, the CLI and the zoo imported once, before the first fork: every child inherits them."""
    from ae_ot.cli import lightning_cli_class

    lightning_cli_class()


@pytest.mark.parametrize("stage", ["autoencoder", "encoding", "ot", "checkpoint_write"])
def test_a_fit_killed_at_each_stage_resumes_and_damages_nothing(tmp_path, imported, stage):
    from ae_ot.checkpoint import load_generator
    from ae_ot.commands import sample

    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    child = multiprocessing.get_context("fork").Process(target=killed_child, args=(stage, fit_args(killed)))
    child.start()
    child.join(timeout=300)
    if child.is_alive():
        child.kill()
        pytest.fail(f"the fit did not reach the {stage} stage within 300 s")
    assert child.exitcode == -signal.SIGKILL, f"the fit ended with {child.exitcode} before the {stage} stage"

    # what the killed run left is whole: every checkpoint loads, none holds a solution yet
    left = checkpoints(killed)
    last_epoch = 0 if stage == "autoencoder" else EPOCHS - 1
    assert [p.name for p in left] == [f"epoch={last_epoch}-step={(last_epoch + 1) * STEPS_PER_EPOCH}.ckpt"]
    assert not load_generator(left[-1]).has_ot_solution
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in killed.rglob("*.ckpt") if p not in left)
    before = digests(killed)

    run_fit(fit_args(resumed) + ["--ckpt_path", str(left[-1])])

    assert digests(killed) == before                      # the killed run's files are untouched
    finished = checkpoints(resumed)
    assert len(finished) == 1 and finished[0].name.endswith(f"-step={EPOCHS * STEPS_PER_EPOCH}.ckpt"), finished
    model = load_generator(finished[0])
    assert model.has_ot_solution and model.sampler.report["steps"] == OT_STEPS
    assert torch.load(finished[0], weights_only=False)["global_step"] == EPOCHS * STEPS_PER_EPOCH   # trained in full
    output = tmp_path / "samples.npy"
    sample.main(["--ckpt_path", str(finished[0]), "--num_samples", "8", "--output", str(output)])
    images = np.load(output)
    assert images.shape == (8, 1, 28, 28) and np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1
