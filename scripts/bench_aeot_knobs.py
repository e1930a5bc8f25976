#!/usr/bin/env python
"""AE-OT's own knobs on MNIST (or Stacked MNIST): number of OT targets x OT budget -> held-out OT error and sample quality.

Does a looser solve over more targets beat a tight solve over fewer? One trained autoencoder (any
Autoencoder or AE-OT checkpoint), its codes of the 55,000 training images encoded once, and for
every pair (number of targets, OT seconds):

* the solve, as AE-OT's ``fit`` runs it (``AEOT.solve_ot``: a seeded subsample of the codes,
  normalised into [-1, 1]^d, ``SemiDiscreteOT.fit(time_limit=budget)``);
* its held-out mean relative cell-measure error on ``--eval_samples`` fresh samples, raw, with the
  Monte Carlo noise floor and noise-corrected (``SemiDiscreteOT.errors``), outside the budget;
* ``--num_samples`` generated digits scored as ``ae-ot compare`` scores them (FID on the project's
  classifier features, precision/recall k=3, density/coverage k=5, modes, KL to uniform), once per
  band of the extended map in ``--radii`` (``AEOT(radius=...)``; 0 is the plain map, whose samples
  are copies of targets), with the fraction of generated codes that copy a training code.

Two reference rows bound what any latent sampler can reach with this decoder: the real test split,
and the decoded training codes themselves (the autoencoder's reconstructions: a sampler that
copies codes perfectly scores this).

    python scripts/bench_aeot_knobs.py run --ckpt_path CKPT --targets 10000,30000,all \\
        --budgets 60,150,300 --out outputs/aeot_knobs/knobs.jsonl
    python scripts/bench_aeot_knobs.py plot --out outputs/aeot_knobs/knobs.jsonl --figure docs/img/aeot_knobs.png

Each finished row is appended to ``--out`` (one JSON line, flushed and fsynced), so an interrupted
study loses at most the row in progress: run the same command again and it skips the rows already
there. The resolved options are saved beside it (``<out>.config.json``); a rerun with other options
(checkpoint, samples, seed) into the same file is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: a generated code closer than this to a training code is a copy (as ``ae-ot latent-compare``)
COPY_TOLERANCE = 1e-4
#: metrics copied from evaluate_samples into each row (the names ``ae-ot compare`` prints)
QUALITY_KEYS = ("fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5", "modes_covered",
                "kl_to_uniform")


# ---- inputs ---------------------------------------------------------------------------------------
def parse_targets(text: str) -> list[int | None]:
    """``"10000,30000,all"`` -> ``[10000, 30000, None]`` (None: every training code)."""
    values = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "all":
            values.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise SystemExit(f"--targets: {item!r} is not an integer or 'all'; give e.g. --targets 10000,30000,all") from None
        if value <= 1:
            raise SystemExit(f"--targets: every number of targets must be > 1, got {value}")
        values.append(value)
    return values


def parse_budgets(text: str) -> list[float]:
    """``"60,150"`` -> ``[60.0, 150.0]`` (seconds of OT solve)."""
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise SystemExit(f"--budgets must be a comma list of seconds, e.g. 60,150,300; got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise SystemExit(f"--budgets must be positive seconds, got {text!r}")
    return values


#: the extended map's band (``AEOT(radius=...)``) of the rows that do not name one
DEFAULT_RADIUS = 0.8


def parse_radii(text: str) -> list[float]:
    """``"0,0.3,0.8"`` -> ``[0.0, 0.3, 0.8]`` (the extended map's band; 0 is the plain map)."""
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise SystemExit(f"--radii must be a comma list of numbers >= 0, e.g. 0,0.3,0.8; got {text!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise SystemExit(f"--radii must be finite numbers >= 0, got {text!r}")
    return values


def row_key(num_targets: int | None, budget: float, radius: float = DEFAULT_RADIUS) -> str:
    """``10000@150s`` (default band) or ``10000@150s r=0.3``."""
    key = f"{'all' if num_targets is None else num_targets}@{budget:g}s"
    return key if radius == DEFAULT_RADIUS else f"{key} r={radius:g}"


def read_rows(path: Path) -> list[dict]:
    """The rows of a study file; a last line cut by a kill is skipped (it is measured again)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line and make it durable before the next (slow) row starts."""
    # A line cut by a kill has no newline: start on a fresh line, so that only the cut row is lost.
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if cut else "") + json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the study --------------------------------------------------------------------------------------
def aeot_from_checkpoint(ckpt_path: str, seed: int):
    """An :class:`~ae_ot.generators.AEOT` with the encoder/decoder of ``ckpt_path`` (an Autoencoder or
    AE-OT checkpoint, MNIST or Stacked MNIST), and the DataModule hyperparameters its training used."""
    from ae_ot.generators import AEOT
    from ae_ot.io import read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    hp = dict(checkpoint.get("hyper_parameters", {}))
    channels = hp.get("channels", 1)
    if channels not in (1, 3):
        raise SystemExit(f"{ckpt_path}: MNIST (1 channel) or Stacked MNIST (3) only, the model has {channels} channels")
    model = AEOT(latent_dim=hp.get("latent_dim", 16), width=hp.get("width", 16), loss=hp.get("loss", "bce"),
                 channels=channels, autoencoder_ckpt=str(ckpt_path), ot={"seed": seed})
    model.eval()
    return model, dict(checkpoint.get("datamodule_hyper_parameters", {}))


def training_images(channels: int, data_hparams: dict, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split the autoencoder learnt (same validation hold-out, seed and subset) and the
    test images: MNIST for 1 channel, Stacked MNIST triples for 3."""
    from ae_ot.data import MNISTDataModule, StackedMNISTDataModule

    kwargs = {key: data_hparams[key] for key in ("val_size", "seed", "subset") if key in data_hparams}
    if channels == 3:
        kwargs.update({key: data_hparams[key] for key in ("num_train", "num_test") if key in data_hparams})
        datamodule = StackedMNISTDataModule(data_dir=data_dir, **kwargs)
    else:
        datamodule = MNISTDataModule(data_dir=data_dir, **kwargs)
    datamodule.setup("fit")
    return datamodule.train_set.images, datamodule.test_set.images


def score(images: torch.Tensor, reference, seed: int) -> dict:
    from ae_ot.evaluation import evaluate_samples

    metrics = evaluate_samples(images, reference=reference, seed=seed)
    return {key: metrics[key] for key in QUALITY_KEYS}


def decode_codes(model, codes: torch.Tensor) -> torch.Tensor:
    """Images [n, C, 28, 28] in [0, 1] of latent codes [n, d], decoded in chunks of 1,000."""
    with torch.no_grad():
        return torch.cat([model.decode(chunk.to(model.device)).float().cpu() for chunk in codes.split(1000)]).clamp(0, 1)


def reference_rows(model, codes: torch.Tensor, test_images: torch.Tensor, reference, num_samples: int,
                   seed: int) -> list[dict]:
    """The real test split, and the decoded training codes (the decoder's ceiling)."""
    pick = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(seed))[:num_samples]
    decoded = decode_codes(model, codes[pick])
    return [{"key": "real-test", "kind": "reference", "what": f"real test images ({min(num_samples, len(test_images))})",
             **score(test_images[:num_samples], reference, seed)},
            {"key": "decoded-codes", "kind": "reference", "what": f"decoded training codes ({len(pick)})",
             **score(decoded, reference, seed)}]


def solve_and_score(model, codes: torch.Tensor, num_targets: int | None, budget: float, radii: list[float],
                    reference, a) -> list[dict]:
    """One (targets, budget) solve, its held-out error, and the sample quality of each band in ``radii``."""
    from ae_ot.evaluation.latent import nearest_neighbour_distances

    model.sampler.settings = dataclasses.replace(model.sampler.settings, num_targets=num_targets, time_limit=budget,
                                                 tol=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        # The fit's own end-of-run evaluation is kept small: the error reported here is measured
        # below, on more samples and outside the budget.
        report = model.solve_ot(codes, progress=not a.no_progress, eval_samples=1 << 18)
        solve_seconds = time.perf_counter() - started
    started = time.perf_counter()
    errors = model.sampler.solver.errors(num_samples=a.eval_samples, seed=a.seed + 1)
    eval_seconds = time.perf_counter() - started
    solve = {
        "num_targets": report["num_targets"], "num_codes": report["num_codes"], "budget_s": budget,
        "solve_s": round(solve_seconds, 2), "steps": report.get("steps"), "solver_samples": report.get("samples"),
        "heldout_mean_rel": errors["mean_rel"], "noise_floor": errors["noise_floor"],
        "heldout_mean_rel_corrected": errors["mean_rel_corrected"], "empty_cells": int(errors["empty_cells"]),
        "eval_samples": a.eval_samples, "eval_s": round(eval_seconds, 2),
        "warnings": sorted({str(w.message)[:200] for w in caught}),
    }
    rows = []
    model_settings = model.sampler.settings
    try:
        for radius in radii:
            model.sampler.settings = dataclasses.replace(model_settings, radius=radius)
            started = time.perf_counter()
            # As model.sample(n, seed) draws them (the same noise stream), kept as codes so that the
            # scored images and the copy count describe the same samples.
            generated = model.latent_samples(a.num_samples, torch.Generator().manual_seed(a.seed))
            images = decode_codes(model, generated)
            sample_seconds = time.perf_counter() - started
            # Which generated codes copy a training code (a sampler that only copies cannot beat
            # the decoded-codes row).
            nearest = nearest_neighbour_distances(codes, generated)
            rows.append({"key": row_key(num_targets, budget, radius), "kind": "aeot", **solve, "radius": radius,
                         "sample_s": round(sample_seconds, 2),
                         "copies_of_training_codes": (nearest < COPY_TOLERANCE).float().mean().item(),
                         **score(images, reference, a.seed)})
    finally:
        model.sampler.settings = model_settings
    return rows


def run(a) -> None:
    from ae_ot.evaluation import get_reference
    from ae_ot.io import write_json_atomic

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Rows belong to one study only if these match: a rerun appends to its own study alone.
    study = {"ckpt_path": str(Path(a.ckpt_path).resolve()), "num_samples": a.num_samples,
             "eval_samples": a.eval_samples, "seed": a.seed, "data_dir": a.data_dir}
    config_path = out.with_name(out.name + ".config.json")
    if config_path.is_file():
        saved = json.loads(config_path.read_text())
        differ = [k for k in study if saved.get(k) != study[k]]
        if differ and read_rows(out):
            raise SystemExit(f"{out} holds another study (different {', '.join(differ)}: "
                             f"{ {k: saved.get(k) for k in differ} }); give another --out")
    targets, budgets = parse_targets(a.targets), parse_budgets(a.budgets)
    write_json_atomic({**study, "targets": a.targets, "budgets": a.budgets, "command": sys.argv}, config_path)

    radii = parse_radii(a.radii)
    done = {row["key"] for row in read_rows(out)}
    todo = [(n, b, [r for r in radii if row_key(n, b, r) not in done]) for n in targets for b in budgets]
    todo = [(n, b, rs) for n, b, rs in todo if rs]
    print(f"{len(done)} row(s) already in {out}; {len(todo)} solve(s) to run", flush=True)
    torch.manual_seed(a.seed)
    model, data_hparams = aeot_from_checkpoint(a.ckpt_path, a.seed)
    channels = model.hparams.channels
    train_images, test_images = training_images(channels, data_hparams, a.data_dir)
    started = time.perf_counter()
    codes = model.encode_dataset(train_images, progress=not a.no_progress)
    print(f"encoded {codes.shape[0]} training images in {time.perf_counter() - started:.1f} s", flush=True)
    reference = get_reference(channels)

    if "real-test" not in done:
        for row in reference_rows(model, codes, test_images, reference, a.num_samples, a.seed):
            append_row(out, row)
            print(format_row(row), flush=True)
    for num_targets, budget, todo_radii in todo:
        print(f"solving {row_key(num_targets, budget)} ...", flush=True)
        for row in solve_and_score(model, codes, num_targets, budget, todo_radii, reference, a):
            append_row(out, row)
            print(format_row(row), flush=True)
    print(markdown_table(read_rows(out)))


# ---- reporting ----------------------------------------------------------------------------------------
def format_row(row: dict) -> str:
    quality = " ".join(f"{k}={row[k]:.3g}" for k in QUALITY_KEYS)
    if row["kind"] == "reference":
        return f"[{row['key']}] {quality}"
    return (f"[{row['key']}] {row['steps']} steps in {row['solve_s']} s; held-out error "
            f"{row['heldout_mean_rel']:.2%} (floor {row['noise_floor']:.2%}, corrected "
            f"{row['heldout_mean_rel_corrected']:.2%}, {row['empty_cells']} empty); {quality}")


def _percent(value) -> str:
    return "—" if value is None else f"{value:.0%}"


def markdown_table(rows: list[dict]) -> str:
    head = ("| targets | OT budget (s) | steps | held-out error raw / floor / **corrected** | empty cells "
            "| band r | copies | FID | precision | recall | density | coverage | modes | KL |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = sorted(rows, key=lambda r: (r["kind"] != "reference", r.get("num_targets") or 0, r.get("budget_s") or 0,
                                        -r.get("radius", DEFAULT_RADIUS)))
    for r in order:
        q = (f"{r['fid_classifier']:.2f} | {r['precision_k3']:.3f} | {r['recall_k3']:.3f} | {r['density_k5']:.3f} "
             f"| {r['coverage_k5']:.3f} | {r['modes_covered']} | {r['kl_to_uniform']:.4f}")
        if r["kind"] == "reference":
            lines.append(f"| {r['what']} | — | — | — | — | — | — | {q} |")
        else:
            lines.append(f"| {r['num_targets']:,} | {r['budget_s']:g} | {r['steps']} | {r['heldout_mean_rel']:.1%} / "
                         f"{r['noise_floor']:.1%} / **{r['heldout_mean_rel_corrected']:.1%}** | {r['empty_cells']} "
                         f"| {r.get('radius', DEFAULT_RADIUS):g} | {_percent(r.get('copies_of_training_codes'))} | {q} |")
    return "\n".join(lines)


def plot(a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.viz import save_figure

    rows = read_rows(Path(a.out))
    solved = [r for r in rows if r["kind"] == "aeot"]
    if not solved:
        raise SystemExit(f"{a.out} has no solved rows yet; run `bench_aeot_knobs.py run` first")
    panels = [("fid_classifier", "FID (classifier features)"), ("recall_k3", "recall (k=3)"),
              ("precision_k3", "precision (k=3)"), ("coverage_k5", "coverage (k=5)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, label) in zip(axes, panels):
        for n, radius in sorted({(r["num_targets"], r.get("radius", DEFAULT_RADIUS)) for r in solved}):
            line = sorted((r for r in solved if r["num_targets"] == n and r.get("radius", DEFAULT_RADIUS) == radius),
                          key=lambda r: r["budget_s"])
            xs = [100 * r["heldout_mean_rel_corrected"] for r in line]
            band = "" if radius == DEFAULT_RADIUS else f", band r={radius:g}"
            ax.plot(xs, [r[key] for r in line], "o-" if len(line) > 1 else "s", label=f"{n:,} targets{band}")
            for r, x in zip(line, xs):
                ax.annotate(f"{r['budget_s']:g}s", (x, r[key]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        for r, style in zip((r for r in rows if r["kind"] == "reference"), (":", "--")):
            ax.axhline(r[key], color="grey", linestyle=style, linewidth=1, label=r["what"])
        ax.set_xlabel("held-out OT error, noise-corrected (%)")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    print(save_figure(fig, a.figure))
    print(markdown_table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "plot"])
    parser.add_argument("--ckpt_path", help="run: an Autoencoder or AE-OT checkpoint trained on MNIST")
    parser.add_argument("--targets", default="10000,30000,all", help="numbers of OT targets (comma list, 'all')")
    parser.add_argument("--budgets", default="60,150,300", help="OT solve seconds (comma list)")
    parser.add_argument("--radii", default=f"{DEFAULT_RADIUS:g}",
                        help="bands of the extended map scored on each solve (comma list; 0: the plain map)")
    parser.add_argument("--num_samples", type=int, default=10000, help="generated digits scored per point")
    parser.add_argument("--eval_samples", type=int, default=1 << 22, help="samples of the held-out OT error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out", default="outputs/aeot_knobs/knobs.jsonl")
    parser.add_argument("--figure", default="outputs/aeot_knobs/knobs.png")
    parser.add_argument("--no_progress", action="store_true")
    a = parser.parse_args(argv)
    if a.what == "run":
        if not a.ckpt_path:
            parser.error("run needs --ckpt_path (a trained Autoencoder or AE-OT checkpoint)")
        if not Path(a.ckpt_path).is_file():
            parser.error(f"--ckpt_path {a.ckpt_path}: no such file")
        if a.num_samples < 6 or a.eval_samples < 1:
            parser.error("--num_samples must be >= 6 (k + 1 for the k=5 coverage) and --eval_samples >= 1")
        run(a)
    else:
        plot(a)


if __name__ == "__main__":
    main()
