"""`ae-ot compare`: bad input, the timed-checkpoint and NaN callbacks, quality against time, failed
models, and a compare killed with SIGKILL then resumed.

The evaluation here is made fast (and never touches ~/.cache): ``AE_OT_CACHE`` points to a tmp
folder, the classifier is trained there on 2,000 images for one epoch (a few seconds), and the
real reference holds 3,000 MNIST test images instead of the 60,000 training images. The numbers
are therefore meaningless; the tests check the mechanics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = str(REPO / "models")  # the tests run in a temporary working directory
TESTS = Path(__file__).resolve().parent
FIT_ARGS = "--data.subset=1000 --trainer.enable_progress_bar=false --model.init_args.grid_every_n_epochs=0"


# --------------------------------------------------------------------------------------------
# A fast evaluation (also installed in the subprocess of the kill test)
# --------------------------------------------------------------------------------------------
def install_tiny_evaluation(setattr_=setattr) -> None:
    """Make ae_ot's evaluation use a 1-epoch classifier on 2,000 images (trained into
    ``$AE_OT_CACHE`` once) and a reference of 3,000 real test images."""
    import ae_ot.evaluation as ev
    import ae_ot.evaluation.metrics as metrics
    import ae_ot.evaluation.reference as ref
    from ae_ot.data import load_mnist
    from ae_ot.evaluation.classifier import get_classifier
    from ae_ot.evaluation.metrics import extract_features, gaussian_stats

    splits = load_mnist()
    classifier = get_classifier(progress=False, splits=splits, subset=2000, epochs=1)
    images, labels = splits.test_images[:3000], splits.test_labels[:3000]
    features, _ = extract_features(images, classifier, check=False)
    mu, sigma = gaussian_stats(features)
    reference = ref.RealReference(1, features, labels, mu, sigma, "3,000 MNIST test images (tests)", classifier)
    setattr_(ev, "get_classifier", lambda **kwargs: classifier)
    tiny_reference = lambda channels=1, classifier=None, **kwargs: reference  # noqa: E731
    setattr_(ref, "get_reference", tiny_reference)
    setattr_(metrics, "get_reference", tiny_reference)  # evaluate_samples' own binding


@pytest.fixture(scope="module")
def tiny_evaluation(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AE_OT_CACHE", str(tmp_path_factory.mktemp("ae_ot_cache")))
        install_tiny_evaluation(mp.setattr)
        yield


def write_config(folder: Path, name: str, source: str, **replace) -> Path:
    """Copy ``models/<source>.yaml`` to ``folder/<name>.yaml`` with ``key: old -> key: new`` edits."""
    text = (REPO / "models" / f"{source}.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def tiny_configs(folder: Path) -> tuple[Path, Path]:
    """A config whose loss turns NaN at once (absurd learning rate), and a tiny AE-OT (1 s OT solve
    on 500 of the 1,000 training codes)."""
    nan = write_config(folder, "nan_lr", "autoencoder", **{"lr: 0.002": "lr: 1.0e+30", "loss: bce": "loss: mse"})
    aeot = write_config(folder, "tiny_ae_ot", "ae_ot", **{"time_limit: 150": "time_limit: 1",
                                                         "num_targets: null": "num_targets: 500"})
    return nan, aeot


def compare_args(configs, out: Path, budget: float = 0.2, checkpoints: int = 3, num_samples: int = 100) -> list[str]:
    return ["--train_configs", *map(str, configs), "--budget_minutes", str(budget), "--num_checkpoints",
            str(checkpoints), "--fit_args", FIT_ARGS, "--num_samples", str(num_samples), "--output_dir", str(out),
            "--no_progress"]


# --------------------------------------------------------------------------------------------
# Bad input: refused before anything is trained
# --------------------------------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    """The compare command, with any fit failing the test (the input was bad)."""
    from ae_ot.commands import compare
    from ae_ot.experiments import resume

    def fail(*args, **kwargs):
        raise AssertionError("a model was trained although the input was bad")

    monkeypatch.setattr(resume, "train_with_budget", fail)
    return compare


@pytest.mark.parametrize("argv, message", [
    ([], r"nothing to compare: give --ckpt_paths and/or --train_configs"),
    (["--train_configs", MODELS + "/no_such_model.yaml"],
     r"--train_configs: every entry must be an existing model config file, "
     r"got '.*models/no_such_model.yaml'.*ae_ot.yaml"),
    (["--train_configs", MODELS + "/wgan.yaml", "--budget_minutes", "0"],
     r"--budget_minutes must be a positive number of minutes, got 0.0; give e.g."),
    (["--train_configs", MODELS + "/wgan.yaml", "--budget_minutes", "-2"], r"positive number of minutes, got -2.0"),
    (["--train_configs", MODELS + "/wgan.yaml", "--num_samples", "5"],
     r"--num_samples must be at least 6 \(k \+ 1 for the k=5 density/coverage\), got 5; raise --num_samples"),
    (["--train_configs", MODELS + "/wgan.yaml", "--num_checkpoints", "0"], r"--num_checkpoints must be at least 1.*got 0"),
    (["--train_configs", MODELS + "/wgan.yaml", MODELS + "/ae_ot.yaml", "--budget_minutes", "2"],
     r"budget_minutes=2.0 leaves no training time for \S*models/ae_ot.yaml: its OT stage alone takes up to 170 s"),
])
def test_bad_arguments_are_refused_before_training(no_training, tmp_path, argv, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        no_training.main(argv + ["--output_dir", str(out)])
    assert not (out / "runs").exists()


def test_a_budget_that_is_not_a_number_is_a_one_line_parser_error(no_training, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        no_training.main(["--train_configs", MODELS + "/wgan.yaml", "--budget_minutes", "nan",
                          "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "budget_minutes" in error and "nan" in error and "Traceback" not in error
    assert not (tmp_path / "out" / "runs").exists()


def test_configs_that_name_no_generator_are_refused(no_training, tmp_path):
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("model: [unclosed\n")
    no_model = tmp_path / "data_only.yaml"
    no_model.write_text("data:\n  class_path: ae_ot.data.MNISTDataModule\n")
    not_generator = tmp_path / "datamodule_as_model.yaml"
    not_generator.write_text("model:\n  class_path: ae_ot.data.MNISTDataModule\n")
    missing_class = tmp_path / "typo.yaml"
    missing_class.write_text("model:\n  class_path: ae_ot.generators.WGANGPP\n")
    twin = tmp_path / "sub" / "wgan.yaml"
    twin.parent.mkdir()
    twin.write_text((REPO / "models" / "wgan.yaml").read_text())
    for config, message in [(not_yaml, "is not a YAML model config"), (no_model, "names no generator"),
                            (not_generator, "which is not a GenerativeModel"),
                            (missing_class, "'ae_ot.generators.WGANGPP', which cannot be imported")]:
        with pytest.raises(ValueError, match=message):
            no_training.main(["--train_configs", MODELS + "/wgan.yaml", str(config), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="share the file name 'wgan'.*rename one"):
        no_training.main(["--train_configs", MODELS + "/wgan.yaml", str(twin), "--output_dir", str(tmp_path / "o")])


def test_output_folder_of_a_different_compare_is_refused(no_training, tmp_path):
    from ae_ot.experiments.store import SPEC_FILE, compare_spec

    compare = no_training
    out = tmp_path / "out"
    config = tmp_path / "wgan.yaml"
    config.write_text((REPO / "models" / "wgan.yaml").read_text())
    first = ["--train_configs", str(config), "--budget_minutes", "5", "--output_dir", str(out)]
    out.mkdir()
    (out / SPEC_FILE).write_text(json.dumps(compare_spec(compare.build_parser().parse_args(first))))
    for change, message in [(["--budget_minutes", "3"], r"budget_minutes: 5.0 there, 3.0 now"),
                            (["--num_checkpoints", "4"], r"num_checkpoints: 5 there, 4 now"),
                            (["--num_samples", "500"], r"num_samples: 10000 there, 500 now"),
                            (["--fit_args=--data.subset=10"], r"fit_args: \[\] there, \['--data.subset=10'\] now")]:
        argv = first + change
        with pytest.raises(ValueError, match=r"holds the results of a different compare \(.*" + message +
                           r".*use another --output_dir, or delete"):
            compare.main(argv)
    with pytest.raises(ValueError, match=r"train_configs: \[\{'name': 'wgan.yaml'.*there, .*'wgan_gp.yaml'"):
        compare.main(["--train_configs", MODELS + "/wgan_gp.yaml", "--budget_minutes", "5", "--output_dir", str(out)])
    config.write_text(config.read_text().replace("lr: 5.0e-05", "lr: 1.0e-04"))     # same file, other content
    with pytest.raises(ValueError, match=r"different compare \(train_configs"):
        compare.main(first)
    # a folder with the table of an older compare (no spec) is refused too, before training
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "compare.json").write_text(json.dumps({"command": "ae-ot compare --ckpt_paths x.ckpt"}))
    with pytest.raises(ValueError, match=r"holds the results of another compare \(ae-ot compare --ckpt_paths x.ckpt\)"):
        compare.main(["--train_configs", str(config), "--output_dir", str(legacy)])


def test_a_second_compare_in_the_same_folder_is_refused(no_training, tmp_path):
    from ae_ot.experiments.store import output_lock

    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(ValueError, match=rf"another `ae-ot compare` \(pid {os.getpid()}\) is writing into {out}"):
            no_training.main(["--train_configs", MODELS + "/wgan.yaml", "--output_dir", str(out)])
    with output_lock(out):       # released: taken again
        pass


def test_checkpoint_marks_and_budget_arithmetic():
    from ae_ot.experiments import budget

    assert budget.max_time_string(0.1) == "00:00:00:06" and budget.max_time_string(90) == "00:01:30:00"
    # every B/K minutes, the last point being the final model; AE-OT's marks stop before its OT stage
    assert budget.checkpoint_marks(20, 5, 1200) == [240, 480, 720, 960]
    assert budget.checkpoint_marks(20, 5, 1200 - 170) == [240, 480, 720, 960]
    assert budget.checkpoint_marks(20, 5, 700) == [240, 480]
    assert budget.checkpoint_marks(20, 1, 1200) == []
    assert budget.post_fit_seconds(MODELS + "/wgan_gp.yaml") == 0.0
    assert budget.post_fit_seconds(MODELS + "/ae_ot.yaml") == 150.0 + budget.ENCODE_SECONDS
    assert budget.post_fit_seconds(MODELS + "/ae_ot.yaml", ["--model.init_args.ot.time_limit=40"]) == \
        40.0 + budget.ENCODE_SECONDS
    assert budget.post_fit_seconds(MODELS + "/ae_ot_gan.yaml") == 0.0   # it solves inside its training time


@pytest.mark.parametrize("cls_name, added", [("AEOT", 12.5), ("AEOTGAN", 0.0)])
def test_a_solved_point_adds_the_ot_seconds_only_where_ot_ran_after_training(monkeypatch, tmp_path, cls_name, added):
    """AE-OT solves after Lightning's loop (outside max_time): its solve's seconds join its time axis.
    AE-OT-GAN solves inside its training time: adding them again would count them twice."""
    import ae_ot.generators as generators
    from ae_ot.experiments import checkpoints

    model = getattr(generators, cls_name)(latent_dim=2, width=2)
    monkeypatch.setattr(type(model), "has_ot_solution", property(lambda self: True))
    model.sampler.report = {"encode_and_solve_seconds": 12.5}
    monkeypatch.setattr("ae_ot.checkpoint.load_generator", lambda path: model)
    result = {"seconds": 1.0, **{k: None for k in checkpoints.ROW_KEYS}}
    monkeypatch.setattr(checkpoints, "score_generator", lambda *a, **k: (result, None))
    record, _ = checkpoints.evaluate_point({"checkpoint": "x.ckpt", "train_seconds": 100.0}, tmp_path, 10, 0, False)
    assert "error" not in record, record
    assert record["post_fit_seconds"] == added and record["seconds"] == 100.0 + added


def test_equal_budget_needs_a_finite_ot_time_limit(tmp_path):
    from ae_ot.experiments import budget

    with pytest.raises(ValueError, match="leaves no training time"):
        budget.train_with_budget(MODELS + "/ae_ot.yaml", 2.0, tmp_path)
    infinite = tmp_path / "aeot_no_limit.yaml"
    infinite.write_text("model:\n  class_path: ae_ot.generators.AEOT\n  init_args:\n    ot:\n      time_limit: null\n")
    with pytest.raises(ValueError, match="finite ot.time_limit"):
        budget.post_fit_seconds(infinite)


def test_fit_error_names_the_last_error_line(tmp_path):
    from ae_ot.experiments import children

    log = tmp_path / "fit.log"
    log.write_text("$ ae-ot fit\nTraceback (most recent call last):\n  File x\nFloatingPointError: loss is nan\n"
                   "some teardown line\n")
    assert children.fit_error(log, 1) == f"`ae-ot fit` exited with 1: FloatingPointError: loss is nan (log: {log})"
    assert children.fit_error(log, -9).startswith("killed after running past its timeout")


def test_markdown_table_shows_a_failed_row_with_its_error():
    from ae_ot.experiments import tables
    from ae_ot.experiments.plots import TABLE_KEYS

    metrics = {k: 1.0 for k in TABLE_KEYS} | {"modes_covered": 10, "num_modes": 10}
    rows = [{"name": "good", "metrics": metrics, "train_seconds": 60.0, "num_samples": 100},
            {"name": "broken", "status": "failed", "error": "FloatingPointError: loss | is nan\nat step 2"}]
    lines = tables.markdown_table(rows).splitlines()
    assert lines[3].startswith("| broken | **failed**: FloatingPointError: loss \\| is nan at step 2 |")
    assert len(lines[3].replace("\\|", "").split("|")) == len(lines[0].split("|"))   # same number of columns


# --------------------------------------------------------------------------------------------
# The callbacks, in a plain Trainer
# --------------------------------------------------------------------------------------------
def tiny_trainer(tmp_path, callbacks, max_steps=10):
    import pytorch_lightning as pl

    return pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks, accelerator="cpu")


def tiny_module(nan_at_step: int | None = None):
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            if nan_at_step is not None and self.global_step >= nan_at_step:
                loss = loss * float("nan")
            self.log("train/loss", loss, on_step=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.randn(64, 4))
            return torch.utils.data.DataLoader(data, batch_size=4)

    return Module()


class FakeClock:
    """``time`` stand-in for ae_ot.callbacks: each perf_counter() call advances by ``tick`` seconds."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def perf_counter(self):
        self.now += self.tick
        return self.now


@pytest.mark.cli
def test_wall_clock_checkpoints_saves_when_the_clock_passes_each_mark(tmp_path, monkeypatch):
    import ae_ot.callbacks as callbacks

    # one clock read at on_train_start (t=1), one per batch: elapsed = step after `step` batches
    monkeypatch.setattr(callbacks, "time", FakeClock(1.0))
    callback = callbacks.WallClockCheckpoints(marks=[2.5, 3.0, 7.0, 100.0], dirpath=str(tmp_path / "timed"))
    tiny_trainer(tmp_path, [callback], max_steps=10).fit(tiny_module())
    manifest = json.loads((tmp_path / "timed" / callbacks.MANIFEST_NAME).read_text())
    # 2.5 and 3.0 are passed by the same batch (elapsed 3): one checkpoint; 100 s is never reached
    assert [c["mark_seconds"] for c in manifest["checkpoints"]] == [2.5, 7.0]
    assert [c["seconds"] for c in manifest["checkpoints"]] == [3.0, 7.0]
    assert [c["global_step"] for c in manifest["checkpoints"]] == [3, 7]
    assert manifest["train_seconds"] == 11.0
    for entry in manifest["checkpoints"]:
        ckpt = torch.load(tmp_path / "timed" / entry["file"], weights_only=False)
        assert ckpt["global_step"] == entry["global_step"]
    with pytest.raises(ValueError, match="ascending positive seconds"):
        callbacks.WallClockCheckpoints(marks=[5, 2], dirpath=str(tmp_path))


@pytest.mark.cli
def test_non_finite_loss_stops_the_fit(tmp_path):
    from ae_ot.callbacks import StopOnNonFiniteLoss

    message = r"training diverged: loss is nan at batch 3 of epoch 0 \(after 4 optimizer steps\); lower the learning"
    with pytest.raises(FloatingPointError, match=message):
        tiny_trainer(tmp_path, [StopOnNonFiniteLoss()]).fit(tiny_module(nan_at_step=3))
    tiny_trainer(tmp_path, [StopOnNonFiniteLoss()]).fit(tiny_module())     # finite: trains to the end


# --------------------------------------------------------------------------------------------
# One compare of two tiny models, a failing one first; shared by the tests below
# --------------------------------------------------------------------------------------------
def plain(data):
    """``data`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(data))


# The end-to-end compare below trains two models for 0.2 min each (42 s with its evaluations): it
# runs under -m slow. The default suite checks compare's arguments, folders, budget arithmetic, timed
# checkpoints and tables without it.
@pytest.fixture(scope="module")
def trained_compare(tiny_evaluation, tmp_path_factory):
    """Compare [nan_lr, tiny_ae_ot] with a 0.2 min budget and 3 time points (in this process).
    Returns (summary, out, argv)."""
    from ae_ot.commands import compare
    from ae_ot.experiments import budget

    folder = tmp_path_factory.mktemp("compare")
    out = folder / "out"
    argv = compare_args(tiny_configs(folder), out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(budget, "ENCODE_SECONDS", 1.0)       # 1,000 training images encode in well under 1 s
        summary = compare.main(argv)
    return summary, out, argv


@pytest.mark.slow
def test_failed_model_is_in_the_table_and_the_others_still_run(trained_compare):
    summary, out, _ = trained_compare
    failed = summary["rows"][0]
    assert failed["status"] == "failed" and "metrics" not in failed
    assert "FloatingPointError: training diverged: loss is nan" in failed["error"], failed["error"]
    assert failed["training"]["returncode"] not in (0, None)
    md = (out / "compare.md").read_text()
    assert "| nan_lr | **failed**: `ae-ot fit` exited with" in md and "training diverged" in md
    assert summary["rows"][1]["metrics"]["fid_classifier"] > 0     # the model after it ran


@pytest.mark.slow
def test_quality_against_time_points(trained_compare):
    summary, out, _ = trained_compare
    row = summary["rows"][1]
    # budget 12 s, 3 points: marks at 4 and 8 s of training (AE-OT trains 12 - (1 + 1) = 10 s), then the final
    assert row["training"]["command"].count("WallClockCheckpoints") == 1
    assert "max_time=00:00:00:10" in row["training"]["command"]
    points = row["points"]
    assert [p["final"] for p in points] == [False, False, True], points
    assert [p["index"] for p in points] == [0, 1, 2]
    for point, mark in zip(points, [4.0, 8.0]):
        assert mark <= point["train_seconds"] < mark + 8
    for point in points:
        assert "metrics" in point, point
        # each AE-OT point pays for its encoding + OT solve (1 s limit) on the time axis
        assert 0.5 < point["post_fit_seconds"] < 30
        assert point["seconds"] == pytest.approx(point["train_seconds"] + point["post_fit_seconds"], abs=1e-3)
    assert points[0]["seconds"] > 4.0 + 0.5             # later than a baseline's first point (4 s)
    assert [p["seconds"] for p in points] == sorted(p["seconds"] for p in points)
    assert row["time_to_sample_seconds"] == points[-1]["seconds"]
    assert row["metrics"] == points[-1]["metrics"]
    assert (out / "quality_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "compare.md").read_text()
    assert "## Quality against time" in md and "| tiny_ae_ot | final |" in md and "quality_vs_time.png" in md
    for name in ("grids.png", "bars.png", "compare_spec.json"):
        assert (out / name).is_file()


@pytest.mark.slow
def test_rerun_evaluates_only_the_missing_point(trained_compare, monkeypatch):
    from ae_ot.commands import compare
    from ae_ot.experiments import budget, resume

    summary, out, argv = trained_compare
    # a compare killed between two points of tiny_ae_ot: that model is not finished, point 2 is missing
    aeot_dir = out / "runs" / "tiny_ae_ot"
    (aeot_dir / "model.json").unlink()
    (aeot_dir / "points" / "point-1.json").unlink()
    calls = []
    real_evaluate_point = resume.evaluate_point

    def counting_evaluate_point(point, *args, **kwargs):
        calls.append(point["index"])
        return real_evaluate_point(point, *args, **kwargs)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fit was trained again")

    monkeypatch.setattr(resume, "train_with_budget", no_training)
    monkeypatch.setattr(resume, "evaluate_point", counting_evaluate_point)
    monkeypatch.setattr(budget, "ENCODE_SECONDS", 1.0)
    resumed = compare.main(argv)
    assert calls == [1]          # nan_lr is finished, points 1 and 3 of tiny_ae_ot are read back
    assert plain(resumed["rows"][0]) == plain(summary["rows"][0])
    before, after = summary["rows"][1]["points"], resumed["rows"][1]["points"]
    assert plain([before[0], before[2]]) == plain([after[0], after[2]])
    assert "metrics" in after[1] and after[1]["train_seconds"] == before[1]["train_seconds"]
    assert (aeot_dir / "model.json").is_file()
    # the same folder with another budget is another compare
    other = list(argv)
    other[other.index("--budget_minutes") + 1] = "0.5"
    with pytest.raises(ValueError, match=r"different compare \(budget_minutes: 0.2 there, 0.5 now"):
        compare.main(other)


@pytest.mark.slow
def test_compare_of_checkpoints(trained_compare, tmp_path):
    from ae_ot.checks import UserInputError
    from ae_ot.commands import compare

    summary, out, _ = trained_compare
    final = summary["rows"][1]["checkpoint"]
    result = compare.main(["--ckpt_paths", final, final, "--names", "AE-OT a", "AE-OT b", "--num_samples", "100",
                           "--output_dir", str(tmp_path), "--include_real", "--no_progress"])
    for name in ("compare.md", "compare.json", "grids.png", "bars.png"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "quality_vs_time.png").exists() and not (tmp_path / "compare_spec.json").exists()
    md = (tmp_path / "compare.md").read_text()
    assert "FID (MNIST classifier features)" in md and "| AE-OT a |" in md and "real (test split)" in md
    assert [r["name"] for r in result["rows"]] == ["AE-OT a", "AE-OT b", "real (test split)"]
    assert result["rows"][0]["metrics"] == result["rows"][1]["metrics"]
    with pytest.raises(ValueError, match="names"):
        compare.main(["--ckpt_paths", final, "--names", "a", "b", "--output_dir", str(tmp_path)])
    # a timed AE-OT checkpoint has no OT solution: a compare of checkpoints says so before evaluating
    timed = next((out / "runs" / "tiny_ae_ot" / "timed").glob("*.ckpt"))
    with pytest.raises(UserInputError, match="without an OT solution"):
        compare.main(["--ckpt_paths", str(timed), "--num_samples", "100", "--output_dir", str(tmp_path)])
    # a checkpoint compare must not overwrite the folder of a training compare
    with pytest.raises(ValueError, match="holds the results of a compare that trained"):
        compare.main(["--ckpt_paths", final, "--num_samples", "100", "--output_dir", str(out)])


# --------------------------------------------------------------------------------------------
# A compare killed with SIGKILL, then run again
# --------------------------------------------------------------------------------------------
DRIVER = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {tests!r})
    from test_compare import install_tiny_evaluation
    install_tiny_evaluation()
    from ae_ot.commands import compare
    compare.main(sys.argv[1:])
""")


def _processes_mentioning(text: str) -> list[int]:
    """Ids of live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_compare_resumes_without_retraining_finished_models(tiny_evaluation, tmp_path, capsys):
    """[tiny autoencoder, nan_lr]: the compare runs in a subprocess and gets SIGKILL once the
    autoencoder is finished and the second fit has started; the same command then completes it."""
    from ae_ot.commands import compare

    tiny_ae = write_config(tmp_path, "tiny_ae", "autoencoder")
    nan_lr, _ = tiny_configs(tmp_path)
    out = tmp_path / "out"
    argv = compare_args([tiny_ae, nan_lr], out, budget=0.1, checkpoints=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS)))
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    with open(tmp_path / "first_run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(driver), *argv], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            fit_dir = str(out / "runs" / "nan_lr")
            linux = sys.platform.startswith("linux")
            _wait_for(lambda: (_processes_mentioning(fit_dir) if linux else Path(fit_dir, "fit.log").is_file())
                      or proc.poll() is not None, 300, "the second fit to start")
            assert proc.poll() is None, (tmp_path / "first_run.log").read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    ae_dir = out / "runs" / "tiny_ae"
    assert (ae_dir / "model.json").is_file() and not (out / "runs" / "nan_lr" / "training.json").exists()
    first = {str(p.relative_to(ae_dir)): p.stat().st_mtime_ns for p in ae_dir.rglob("*")}
    if linux:      # the fit dies with the compare that started it
        _wait_for(lambda: not _processes_mentioning(fit_dir), 10, "the fit of the killed compare to end")

    summary = compare.main(argv)
    printed = capsys.readouterr().out
    assert "tiny_ae: finished in an earlier run (ok), kept" in printed
    assert "nan_lr: discarding the interrupted fit" in printed
    # the finished model was neither trained nor evaluated again: its files are those of the first run
    assert {str(p.relative_to(ae_dir)): p.stat().st_mtime_ns for p in ae_dir.rglob("*")} == first
    assert [(r["name"], r["status"]) for r in summary["rows"]] == [("tiny_ae", "ok"), ("nan_lr", "failed")]
    assert [p["final"] for p in summary["rows"][0]["points"]] == [False, True]
    assert "training diverged" in summary["rows"][1]["error"]
    saved = json.loads((out / "compare.json").read_text())
    assert plain(saved["rows"]) == plain(summary["rows"])
    # the interrupted fit was started again from scratch: one fit in its log
    assert (out / "runs" / "nan_lr" / "fit.log").read_text().count("$ ") == 1
    assert not list(out.rglob("*.tmp*")), "a temporary file of an atomic write was left behind"
