"""One trained model of a comparison, resumable: its budgeted fit, then its time points, each
recorded atomically so that a comparison run again continues where it stopped.

A model's run folder holds ``fit.log``, ``training.json`` (the fit ended), ``points/point-<k>.json``
(one per evaluated time point), ``grid.pt`` (the final point's grid samples) and ``model.json``
(the model is finished: its table row).
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ae_ot.experiments.budget import TIMED_DIR, train_with_budget
from ae_ot.experiments.checkpoints import ROW_KEYS, evaluate_point
from ae_ot.experiments.plots import GRID_SIZE
from ae_ot.experiments.store import read_json

__all__ = ["TrainEntry", "time_points", "run_model", "grid_samples"]


@dataclass
class TrainEntry:
    """One config to train: its display name, its run folder and its checkpoint marks (training seconds)."""

    name: str
    config: Path
    run_dir: Path
    marks: list[float]


def time_points(run_dir: Path, training: dict) -> list[dict]:
    """The checkpoints of a budgeted fit to evaluate, in time order: the timed ones listed in
    ``timed/timeline.json``, then the final one (when the fit succeeded)."""
    from ae_ot.callbacks import MANIFEST_NAME

    timeline = read_json(run_dir / TIMED_DIR / MANIFEST_NAME) or {}
    points = [{"index": i, "checkpoint": str(Path(TIMED_DIR) / c["file"]), "train_seconds": c["seconds"],
               "global_step": c.get("global_step"), "final": False}
              for i, c in enumerate(timeline.get("checkpoints", []))]
    if training.get("checkpoint"):
        seconds = timeline.get("train_seconds") or training["train_seconds"]
        points.append({"index": len(points), "checkpoint": training["checkpoint"], "train_seconds": seconds,
                       "global_step": None, "final": True})
    return points


def _train(entry: TrainEntry, args) -> dict:
    """The record of ``entry``'s fit: read back from ``training.json``, else trained now from
    scratch (an interrupted fit's folder is discarded: a wall-clock budget cannot be resumed)."""
    from ae_ot.io import write_json_atomic

    run_dir = entry.run_dir
    training = read_json(run_dir / "training.json")
    if training is not None:
        return training
    if run_dir.exists():
        print(f"{entry.name}: discarding the interrupted fit in {run_dir}", flush=True)
        shutil.rmtree(run_dir)
    print(f"{entry.name}: training {entry.config} for {args.budget_minutes} min -> {run_dir} "
          f"(log: {run_dir / 'fit.log'})", flush=True)
    training = train_with_budget(entry.config, args.budget_minutes, run_dir, shlex.split(args.fit_args),
                                 args.keep_max_epochs, marks=entry.marks, progress=not args.no_progress)
    write_json_atomic(training, run_dir / "training.json")
    failed = f"  FAILED: {training['error']}" if training.get("error") else ""
    print(f"  {training['train_seconds']:.0f} s{failed}", flush=True)
    return training


def _point_summary(record: dict) -> str:
    if record.get("error"):
        return f"at {record['seconds']:.0f} s: FAILED: {record['error']}"
    m = record["metrics"]
    return (f"at {record['seconds']:.0f} s: FID {m['fid_classifier']:.3g}, coverage {m['coverage_k5']:.3f}, "
            f"KL {m['kl_to_uniform']:.3f}")


def _evaluate_points(entry: TrainEntry, training: dict, args) -> list[dict]:
    """The records of every time point of ``entry``: stored ones read back, missing ones evaluated."""
    import torch

    from ae_ot.io import atomic_write, write_json_atomic

    points, records = time_points(entry.run_dir, training), []
    for point in points:
        path = entry.run_dir / "points" / f"point-{point['index']}.json"
        record = read_json(path)
        if record is None:
            what = "final" if point["final"] else f"{point['train_seconds']:.0f} s of training"
            print(f"  {entry.name}: evaluating point {point['index'] + 1}/{len(points)} ({what})", flush=True)
            record, samples = evaluate_point(point, entry.run_dir, args.num_samples, args.seed, not args.no_progress)
            if samples is not None and point["final"]:
                atomic_write(entry.run_dir / "grid.pt", lambda p, s=samples: torch.save(s[:GRID_SIZE].clone(), p))
            write_json_atomic(record, path)
            print(f"    {_point_summary(record)}", flush=True)
        records.append(record)
    return records


def _model_row(entry: TrainEntry, training: dict, records: list[dict]) -> dict:
    """The table row of a trained model: its final point's metrics, or failed with the first error."""
    row = {"name": entry.name, "config": str(entry.config), "training": training,
           "train_seconds": training["train_seconds"], "points": records, "run_dir": str(entry.run_dir),
           "checkpoint": str(entry.run_dir / training["checkpoint"]) if training.get("checkpoint") else None}
    final = records[-1] if records and records[-1]["final"] else None
    if final is None or final.get("error"):
        row["status"] = "failed"
        row["error"] = training.get("error") or (final or {}).get("error") or "no checkpoint"
        return row
    row["status"] = "ok"
    row.update({k: final[k] for k in ROW_KEYS})
    row["seconds"] = final["evaluation_seconds"]
    row["time_to_sample_seconds"] = final["seconds"]
    return row


def run_model(entry: TrainEntry, args) -> dict:
    """Train one config with the budget, evaluate its time points and return its table row,
    resuming from what ``entry.run_dir`` already holds.

    ``model.json`` there means the model is finished (its row is read back); ``training.json``
    means the fit ended (only missing points are evaluated); otherwise the folder is an interrupted
    fit and is trained again from scratch. ``args`` holds the comparison's options.
    """
    from ae_ot.io import write_json_atomic

    run_dir = entry.run_dir
    finished = read_json(run_dir / "model.json")
    if finished is not None:
        print(f"{entry.name}: finished in an earlier run ({finished['status']}), kept", flush=True)
        # paths as seen from this run (the same folder may be reached by another relative path)
        ckpt = (finished.get("training") or {}).get("checkpoint")
        return dict(finished, name=entry.name, run_dir=str(run_dir), checkpoint=str(run_dir / ckpt) if ckpt else None)
    training = _train(entry, args)
    row = _model_row(entry, training, _evaluate_points(entry, training, args))
    write_json_atomic(row, run_dir / "model.json")
    return row


def grid_samples(row: dict):
    """The stored grid samples of a trained model's final point (None if there are none)."""
    import torch

    path = Path(row["run_dir"]) / "grid.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None
