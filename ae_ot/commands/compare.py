"""``ae-ot compare``: one table, sample grids and bar charts for several generators.

Evaluate existing checkpoints::

    ae-ot compare --ckpt_paths a.ckpt b.ckpt c.ckpt --num_samples 10000 --output_dir compare/

Or train the zoo first with the same wall-clock budget per model, then evaluate::

    ae-ot compare --train_configs models/autoencoder.yaml models/ae_ot.yaml models/wgan_gp.yaml \
        --budget_minutes 5 --output_dir compare/

Each config is trained by ``ae-ot fit --config X --trainer.max_time=... --trainer.max_epochs=-1``
in a subprocess (so every model gets the whole budget, whatever ``max_epochs`` its config sets),
and its newest checkpoint is evaluated. AE-OT's OT stage, which runs after the trainer stops, is
taken out of its training time (``ot_time_limit`` + 20 s of encoding), so its autoencoder and its
OT solve together get the same wall-clock as every other model. Writes ``compare.md``,
``compare.json``, ``grids.png`` and ``bars.png`` into ``--output_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "train_with_budget", "post_fit_seconds", "max_time_string", "markdown_table",
           "plot_grids", "plot_bars"]

TABLE_KEYS = ["fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5",
              "w2_minibatch_classifier", "modes_covered", "kl_to_uniform", "mean_confidence"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ae-ot compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_paths", nargs="+", default=[], help="checkpoints to evaluate")
    parser.add_argument("--names", nargs="+", default=None,
                        help="display names, one per checkpoint then one per config (default: derived)")
    parser.add_argument("--train_configs", nargs="+", default=[],
                        help="configs to train with an equal wall-clock budget first (`ae-ot fit --config X`)")
    parser.add_argument("--budget_minutes", type=float, default=5.0,
                        help="training wall-clock budget per config, in minutes (default 5; fractions allowed)")
    parser.add_argument("--fit_args", default="",
                        help="extra arguments for every `ae-ot fit`, e.g. \"--data.subset=20000\"")
    parser.add_argument("--keep_max_epochs", action="store_true",
                        help="keep the configs' max_epochs (default: -1, so each model trains for the whole budget)")
    parser.add_argument("--num_samples", type=int, default=10000, help="samples per generator (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--include_real", action="store_true",
                        help="add a row for real MNIST test images (Stacked MNIST if the generators are 3-channel)")
    parser.add_argument("--output_dir", default="compare", help="folder for compare.md/json, grids.png, bars.png")
    parser.add_argument("--no_progress", action="store_true")
    return parser


# --------------------------------------------------------------------------------------------
# Equal-budget training
# --------------------------------------------------------------------------------------------
def max_time_string(minutes: float) -> str:
    """Minutes -> Lightning's ``DD:HH:MM:SS``."""
    if not minutes > 0:
        raise ValueError(f"budget_minutes must be positive, got {minutes}")
    seconds = max(1, round(minutes * 60))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{mins:02d}:{secs:02d}"


def newest_checkpoint(folder: Path) -> Path | None:
    ckpts = sorted(folder.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None


# seconds reserved for what a model does after Lightning's loop: AE-OT encodes the training set
# (~10 s on the CPU) and then solves OT for at most ot_time_limit seconds
_ENCODE_SECONDS = 20.0


def post_fit_seconds(config: str | Path, fit_args: list[str] | None = None) -> float:
    """Wall-clock a config's model spends after training ends (0 for all but AE-OT): the AE-OT OT
    stage's ``ot_time_limit`` (from the config, or a ``--model.init_args.ot_time_limit=`` override)
    plus the encoding of the training set."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    model = cfg.get("model") or {}
    if not str(model.get("class_path", "")).endswith("AEOT"):
        return 0.0
    limit = (model.get("init_args") or {}).get("ot_time_limit", 150.0)
    for arg in fit_args or []:
        for prefix in ("--model.init_args.ot_time_limit=", "--model.ot_time_limit="):
            if arg.startswith(prefix):
                limit = arg[len(prefix):]
    if limit in (None, "null", "None"):
        raise ValueError(f"{config}: an equal wall-clock budget needs a finite ot_time_limit for AE-OT")
    return float(limit) + _ENCODE_SECONDS


def train_with_budget(config: str | Path, budget_minutes: float, run_dir: Path, fit_args: list[str] | None = None,
                      keep_max_epochs: bool = False, timeout_factor: float = 3.0) -> dict:
    """Run ``ae-ot fit --config config`` for ``budget_minutes`` of wall-clock in a subprocess.

    Returns ``{"config", "checkpoint", "train_seconds", "returncode", "log"}`` (``checkpoint`` None
    when the run failed or wrote none; the log's tail is kept in ``error``).
    """
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # AE-OT's OT solve runs after the trainer stops (on_fit_end), outside Lightning's max_time: take
    # it out of the budget so that its autoencoder + OT together get the same wall-clock as the others.
    post_fit = post_fit_seconds(config, fit_args)
    train_minutes = budget_minutes - post_fit / 60
    if train_minutes <= 0:
        raise ValueError(f"budget_minutes={budget_minutes} leaves no training time for {config}: its OT stage "
                         f"alone takes up to {post_fit:.0f} s; raise --budget_minutes or lower ot_time_limit")
    cmd = [sys.executable, "-m", "ae_ot", "fit", "--config", str(config),
           f"--trainer.max_time={max_time_string(train_minutes)}", f"--trainer.default_root_dir={run_dir}"]
    if not keep_max_epochs:
        cmd.append("--trainer.max_epochs=-1")
    cmd += list(fit_args or [])
    log_path = run_dir / "fit.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    started = time.perf_counter()
    # generous outer timeout: start-up, validation and checkpointing come on top of max_time
    timeout = budget_minutes * 60 * timeout_factor + 300
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        try:
            returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = -9
    seconds = time.perf_counter() - started
    result = {"config": str(config), "command": shlex.join(cmd), "train_seconds": round(seconds, 1),
              "post_fit_budget_seconds": post_fit, "returncode": returncode, "log": str(log_path), "checkpoint": None}
    ckpt = newest_checkpoint(run_dir) if returncode == 0 else None
    if ckpt is None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        result["error"] = (f"`ae-ot fit` exited with {returncode}" if returncode else "no checkpoint written") + \
            ": " + " | ".join(tail)
    else:
        result["checkpoint"] = str(ckpt)
    return result


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def _fmt(key: str, metrics: dict) -> str:
    value = metrics[key]
    if key == "modes_covered":
        return f"{value}/{metrics['num_modes']}"
    if key == "fid_classifier" or key == "w2_minibatch_classifier":
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(rows: list[dict]) -> str:
    """Markdown table, one row per evaluated generator, best value of each column in bold
    (rows marked ``is_real`` take no part in "best")."""
    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    ok = [r for r in rows if r.get("metrics")]
    contenders = [r for r in ok if not r.get("is_real")]
    best = {}
    for key in TABLE_KEYS:
        values = [r["metrics"][key] for r in contenders]
        if values:
            best[key] = max(values) if HIGHER_IS_BETTER[key] else min(values)
    header = ["Generator"] + [METRIC_NAMES[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in TABLE_KEYS]
    header += ["train s", "samples"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if not r.get("metrics"):
            lines.append(f"| {r['name']} | " + " | ".join(["failed"] + [""] * (len(header) - 2)) + " |")
            continue
        cells = [r["name"]]
        for key in TABLE_KEYS:
            text = _fmt(key, r["metrics"])
            tied = len({c["metrics"][key] for c in contenders}) == 1
            if not r.get("is_real") and len(contenders) > 1 and not tied and r["metrics"][key] == best.get(key):
                text = f"**{text}**"
            cells.append(text)
        cells.append(f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "-")
        cells.append(str(r["num_samples"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_grids(named_samples: list[tuple[str, "object"]], path: Path, n: int = 64) -> Path:
    """Sample grids side by side, one titled panel per generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.viz import make_grid

    k = len(named_samples)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.6), squeeze=False)
    for ax, (name, samples) in zip(axes[0], named_samples):
        grid = make_grid(samples[:n], nrow=8).numpy()
        if grid.shape[0] == 1:
            ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(grid[:3].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(rows: list[dict], path: Path) -> Path:
    """One bar chart per metric, one bar per generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES

    ok = [r for r in rows if r.get("metrics")]
    names = [r["name"] for r in ok]
    colors = [f"C{i % 10}" for i in range(len(ok))]
    fig, axes = plt.subplots(3, 3, figsize=(13, 9.5))
    for ax, key in zip(axes.flat, TABLE_KEYS):
        values = [r["metrics"][key] for r in ok]
        ax.bar(range(len(ok)), values, color=colors)
        title = METRIC_NAMES[key] + (" (higher is better)" if HIGHER_IS_BETTER[key] else " (lower is better)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(ok)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        if key in ("fid_classifier", "kl_to_uniform") and values and min(values) > 0 and \
                max(values) / max(min(values), 1e-12) > 100:
            ax.set_yscale("log")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _default_name(result: dict, used: set[str]) -> str:
    base = result["generator"].rsplit(".", 1)[-1]
    name, i = base, 2
    while name in used:
        name, i = f"{base} ({i})", i + 1
    return name


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    from ae_ot.commands.evaluate import evaluate_checkpoint, evaluate_real

    args = build_parser().parse_args(argv)
    if not args.ckpt_paths and not args.train_configs:
        raise ValueError("nothing to compare: give --ckpt_paths and/or --train_configs")
    if args.num_samples < 6:
        raise ValueError(f"--num_samples must be at least 6 (k + 1 for the k=5 density/coverage), got {args.num_samples}")
    for path in args.ckpt_paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
    for path in args.train_configs:
        if not Path(path).is_file():
            raise FileNotFoundError(f"training config {path} does not exist")
    total = len(args.ckpt_paths) + len(args.train_configs)
    if args.names is not None and len(args.names) != total:
        raise ValueError(f"--names gives {len(args.names)} names for {total} generators")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # (name, checkpoint or None, training info or None)
    entries: list[tuple[str | None, str | None, dict | None]] = [(None, p, None) for p in args.ckpt_paths]
    fit_args = shlex.split(args.fit_args)
    for config in args.train_configs:
        run_dir = out / "runs" / Path(config).stem
        print(f"training {config} for {args.budget_minutes} min -> {run_dir}", flush=True)
        info = train_with_budget(config, args.budget_minutes, run_dir, fit_args, args.keep_max_epochs)
        print(f"  {info['train_seconds']:.0f} s, checkpoint {info['checkpoint']}" +
              (f"  FAILED: {info['error']}" if info.get("error") else ""), flush=True)
        entries.append((Path(config).stem, info["checkpoint"], info))

    rows, named_samples, used = [], [], set()
    for i, (name, ckpt, info) in enumerate(entries):
        if args.names is not None:
            name = args.names[i]
        row = {"name": name, "checkpoint": ckpt, "training": info,
               "train_seconds": info["train_seconds"] if info else None}
        if ckpt is None:
            row["error"] = info.get("error") if info else "no checkpoint"
            row["name"] = name or f"#{i}"
            rows.append(row)
            continue
        print(f"evaluating {ckpt}", flush=True)
        try:
            result, samples = evaluate_checkpoint(ckpt, args.num_samples, args.seed, progress=not args.no_progress,
                                                  return_samples=True)
        except (ValueError, FileNotFoundError) as err:
            if not args.train_configs:
                raise
            row["error"] = f"{type(err).__name__}: {err}"
            row["name"] = name or Path(ckpt).stem
            rows.append(row)
            continue
        row["name"] = name or _default_name(result, used)
        used.add(row["name"])
        row.update({k: result[k] for k in ("generator", "num_samples", "seed", "metrics", "classifier", "seconds")})
        rows.append(row)
        named_samples.append((row["name"], samples))
    evaluated = [r for r in rows if r.get("metrics")]
    if not evaluated:
        raise ValueError("no generator could be evaluated: " + "; ".join(f"{r['name']}: {r.get('error')}" for r in rows))
    if args.include_real:
        channels = named_samples[0][1].shape[1]
        result, samples = evaluate_real("test", min(args.num_samples, 10000) if channels == 1 else args.num_samples,
                                        args.seed, stacked=channels == 3, progress=not args.no_progress,
                                        return_samples=True)
        rows.append({"name": "real (test split)", "is_real": True, "checkpoint": None, "training": None,
                     "train_seconds": None, **{k: result[k] for k in ("generator", "num_samples", "seed", "metrics")}})
        named_samples.append(("real (test split)", samples))

    from ae_ot.evaluation.metrics import METRIC_NAMES

    command = "ae-ot compare " + shlex.join(argv if argv is not None else sys.argv[2:])
    table = markdown_table(rows)
    budget = f"{args.budget_minutes} min of training per model; " if args.train_configs else ""
    md = [f"# Generator comparison\n", f"Command: `{command}`\n",
          f"{budget}{args.num_samples} samples per generator (seed {args.seed}). Features: the project's "
          "MNIST classifier (penultimate layer), not Inception; best value per column in bold.\n", table, ""]
    failed = [r for r in rows if not r.get("metrics")]
    for r in failed:
        md.append(f"- {r['name']}: {r.get('error')}")
    md += ["", "![samples](grids.png)", "", "![metrics](bars.png)", ""]
    (out / "compare.md").write_text("\n".join(md))
    summary = {"command": command, "budget_minutes": args.budget_minutes if args.train_configs else None,
               "num_samples": args.num_samples, "seed": args.seed, "metric_names": METRIC_NAMES, "rows": rows}
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    plot_grids(named_samples, out / "grids.png")
    plot_bars(rows, out / "bars.png")
    print(table)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'grids.png'}, {out / 'bars.png'}")
    return summary
