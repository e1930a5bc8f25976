"""Generators of checkpoints, scored: a checkpoint as it is, a time point of a budgeted fit (an
AE-OT one gets its OT solve first), and the rows of a comparison's checkpoints and real images."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from ae_ot.evaluation.scoring import check_sample_count, evaluate_real, score_generator
from ae_ot.experiments.budget import TIMED_DIR
from ae_ot.experiments.plots import GRID_SIZE

__all__ = ["ROW_KEYS", "evaluate_checkpoint", "training_images", "solve_ot_now", "evaluate_point", "checkpoint_rows", "real_row"]

#: what a comparison's row takes of a scored generator
ROW_KEYS = ("generator", "num_samples", "seed", "metrics", "classifier")


def evaluate_checkpoint(ckpt_path: str | Path, num_samples: int = 10000, seed: int = 0, progress: bool = True,
                        return_samples: bool = False):
    """Load a checkpoint with :func:`~ae_ot.checkpoint.load_generator`, draw ``num_samples`` and
    score them (:func:`~ae_ot.evaluation.scoring.score_generator`). Returns the result dict (its
    ``checkpoint`` first), and the samples too when ``return_samples``."""
    from ae_ot.checkpoint import load_generator  # Lightning and the zoo: imported when a checkpoint is read

    check_sample_count(num_samples)
    started = time.perf_counter()
    model = load_generator(ckpt_path)
    result, samples = score_generator(model, num_samples, seed, progress=progress, started=started,
                                      checkpoint=str(ckpt_path))
    return (result, samples) if return_samples else result


def _run_config(run_dir: Path) -> dict:
    """The resolved config that ``ae-ot fit`` saved for the run in ``run_dir``."""
    import yaml

    configs = sorted(p for p in run_dir.rglob("config.yaml") if Path(run_dir, TIMED_DIR) not in p.parents)
    if not configs:
        raise FileNotFoundError(f"no config.yaml under {run_dir}: the fit saved none, so its training data is unknown")
    return yaml.safe_load(configs[-1].read_text()) or {}


def training_images(run_dir: Path):
    """The training images the fit in ``run_dir`` used (its DataModule, rebuilt from its config)."""
    data = _run_config(run_dir).get("data") or {}
    module_name, _, class_name = str(data.get("class_path", "ae_ot.data.MNISTDataModule")).rpartition(".")
    datamodule_class = getattr(importlib.import_module(module_name or "ae_ot.data"), class_name)
    datamodule = datamodule_class(**(data.get("init_args") or {}))
    datamodule.setup("fit")
    return datamodule.train_set.images


def _fit_device(run_dir: Path) -> str:
    """The device the fit trained on: the CPU when its config asked for it or there is no GPU."""
    import torch

    accelerator = str((_run_config(run_dir).get("trainer") or {}).get("accelerator", "auto"))
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def solve_ot_now(model, run_dir: Path, progress: bool) -> float:
    """Give an AE-OT model of a timed checkpoint its OT solution, as its fit does at the end
    (encode the training set, :meth:`~ae_ot.generators.AEOT.solve_ot` with the config's
    ``ot.time_limit``); returns the seconds of encoding + solving."""
    images = training_images(run_dir)
    model.to(_fit_device(run_dir))
    start = time.perf_counter()
    codes = model.encode_dataset(images, progress=progress)
    model.solve_ot(codes, progress=progress)
    return time.perf_counter() - start


def evaluate_point(point: dict, run_dir: Path, num_samples: int, seed: int, progress: bool):
    """Evaluate one time point of a budgeted fit.

    A timed AE-OT checkpoint has no OT solution yet: it is solved now (:func:`solve_ot_now`) and
    the seconds go on its time axis; the final AE-OT checkpoint brings the seconds its fit spent
    after training (none for AE-OT-GAN, which solves inside its training time).
    Any error is caught and recorded. Returns the point's record (``seconds`` = training seconds +
    those of the OT stage, ``metrics`` or ``error``) and the samples (None on error).
    """
    from ae_ot.checkpoint import load_generator

    record = dict(point, post_fit_seconds=0.0, seconds=point["train_seconds"])
    try:
        model = load_generator(run_dir / point["checkpoint"])
        if hasattr(model, "solve_ot"):       # AE-OT: its OT stage is part of its time
            if not model.has_ot_solution:
                record["post_fit_seconds"] = solve_ot_now(model, run_dir, progress)
            elif model.solves_ot_after_training:   # AE-OT-GAN solves inside its training time
                record["post_fit_seconds"] = (model.sampler.report or {}).get("encode_and_solve_seconds", 0.0)
        record["seconds"] = round(point["train_seconds"] + record["post_fit_seconds"], 3)
        result, samples = score_generator(model, num_samples, seed, progress=progress)
    except Exception as err:     # one bad point (or model) must not stop the comparison
        record["error"] = f"{type(err).__name__}: {err}"
        return record, None
    record.update({k: result[k] for k in ROW_KEYS})
    record["evaluation_seconds"] = result["seconds"]
    return record, samples


def _default_name(result: dict, used: set[str]) -> str:
    base = result["generator"].rsplit(".", 1)[-1]
    name, i = base, 2
    while name in used:
        name, i = f"{base} ({i})", i + 1
    return name


def checkpoint_rows(args, used: set[str]) -> tuple[list[dict], list[tuple]]:
    """Rows and grid samples of the comparison's ``args.ckpt_paths``, evaluated on every run (not
    stored). A checkpoint that cannot be evaluated stops the comparison of checkpoints only; beside
    trained models it becomes a failed row. Default names are the generator's class, unique among ``used``."""
    rows, named_samples = [], []
    for i, ckpt in enumerate(args.ckpt_paths):
        name = args.names[i] if args.names is not None else None
        row = {"name": name, "checkpoint": ckpt, "training": None, "train_seconds": None}
        print(f"evaluating {ckpt}", flush=True)
        try:
            result, samples = evaluate_checkpoint(ckpt, args.num_samples, args.seed, progress=not args.no_progress,
                                                  return_samples=True)
        except (ValueError, FileNotFoundError) as err:
            if not args.train_configs:
                raise
            rows.append(dict(row, name=name or Path(ckpt).stem, status="failed", error=f"{type(err).__name__}: {err}"))
            continue
        row["name"] = name or _default_name(result, used)
        used.add(row["name"])
        row.update({k: result[k] for k in (*ROW_KEYS, "seconds")})
        rows.append(dict(row, status="ok"))
        named_samples.append((row["name"], samples))
    return rows, named_samples


def real_row(args, channels: int) -> dict:
    """The row of real test images (Stacked MNIST when the generators have 3 channels), with its
    grid samples under ``samples``."""
    result, samples = evaluate_real("test", min(args.num_samples, 10000) if channels == 1 else args.num_samples,
                                    args.seed, stacked=channels == 3, progress=not args.no_progress,
                                    return_samples=True)
    return {"name": "real (test split)", "is_real": True, "checkpoint": None, "training": None, "train_seconds": None,
            "status": "ok", "samples": samples[:GRID_SIZE],
            **{k: result[k] for k in ("generator", "num_samples", "seed", "metrics")}}
