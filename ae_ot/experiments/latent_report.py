"""The report of ``ae-ot latent-compare``: ``latent_compare.md``, ``latent_compare.json``,
``latent_compare.png`` (UMAP of the training codes with each sampler's codes over it, and a row of
decoded samples per sampler) and ``latent_steps.png`` (quality against ODE steps)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ae_ot.experiments.latent import SAMPLER_NAMES
from ae_ot.experiments.plots import finish_figure, pyplot
from ae_ot.experiments.tables import md_rows

__all__ = ["markdown_report", "plot_overview", "plot_steps", "write_latent_reports"]


def _seconds(value) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.0f}")


def markdown_report(result: dict, steps_rows: list[dict], straightness_of: dict, command: str) -> str:
    """The markdown of ``latent_compare.md``: the sampler table, quality against ODE steps, straightness."""
    header = ["latent sampler", "FID (classifier features) ↓", "precision ↑", "recall ↑", "density ↑",
              "coverage ↑",
              "classes", "KL to uniform ↓", "gap score ↓", "copies of training codes", "rel. NN distance",
              "sampling s / 10k (latent)", "sampling s / 10k (with decoding)", "latent training s"]
    lines = ["# Latent samplers on one autoencoder\n", f"Command: `{command}`\n",
             f"{result['rows'][0]['num_samples']} samples per sampler, all decoded by the same decoder. "
             f"Gap score against {result['reference_codes'].shape[0]} training codes (threshold "
             f"{result['gap_threshold']:.4g}); copies and NN distances against all {result['num_train_codes']} "
             "training codes; rel. NN distance = median distance to the nearest training code / the training codes' "
             "median nearest-neighbour distance (0: copies). Features: the project's MNIST classifier, not "
             "Inception.\n"]
    table = []
    for r in result["rows"]:
        m = r["metrics"]
        name = r["name"] + (f" ({r['num_steps']} {r['solver']} steps)" if "num_steps" in r else "")
        cells = [name, f"{m['fid_classifier']:.2f}", f"{m['precision_k3']:.3f}", f"{m['recall_k3']:.3f}",
                 f"{m['density_k5']:.3f}", f"{m['coverage_k5']:.3f}", f"{m['modes_covered']}/{m['num_modes']}",
                 f"{m['kl_to_uniform']:.4f}", f"{100 * r['gap_score']:.1f}%",
                 f"{100 * r['copies_of_training_codes']:.1f}%",
                 f"{r['relative_nn_distance']:.2f}", _seconds(r["latent_seconds_per_10k"]),
                 _seconds(r["sample_seconds_per_10k"]), _seconds(r["latent_train_seconds"])]
        table.append(cells)
    lines += md_rows(header, table) + ["", "![latent samplers](latent_compare.png)", ""]
    if steps_rows:
        steps = sorted({r["num_steps"] for r in steps_rows})
        names = list(dict.fromkeys(r["sampler"] for r in steps_rows))
        table = []
        for name in names:
            by_steps = {r["num_steps"]: r for r in steps_rows if r["sampler"] == name}
            msd = straightness_of.get(name)
            table.append([SAMPLER_NAMES.get(name, name), *(f"{by_steps[k]['fid_classifier']:.2f} ("
                                                           f"{by_steps[k]['precision_k3']:.2f} / "
                                                           f"{by_steps[k]['recall_k3']:.2f})" for k in steps),
                          "-" if msd is None else f"{msd:.4f}"])
        lines += [f"## Quality against ODE steps ({steps_rows[0]['solver']}, "
                  f"FID on the classifier features; precision / recall)\n",
                  *md_rows(["flow", *(f"{k} steps" for k in steps), "path MSD from chord ↓"], table)]
        lines += ["", "Path MSD: mean over samples and times of |z(t) - ((1 - t) z(0) + t z(1))|^2 on a 100-step "
                  "midpoint solve, in the normalised latent space (lower: straighter).", "",
                  "![quality against ODE steps](latent_steps.png)", ""]
    return "\n".join(lines)


def plot_overview(result: dict, path: Path, use_umap: bool = True, per_row: int = 16, shown: int = 1000,
                  seed: int = 0) -> Path:
    """Top: UMAP of the reference training codes (coloured by digit) with each sampler's codes over
    it (skipped without ``use_umap``); below: one row of ``per_row`` decoded samples per sampler."""
    plt = pyplot()
    from ae_ot.viz import make_grid

    names = list(result["codes"])
    k = len(names)
    rows_top = 1 if use_umap else 0
    fig = plt.figure(figsize=(4.2 * k, (4.4 if use_umap else 0) + 1.05 * k))
    grid_spec = fig.add_gridspec(rows_top + k, k, height_ratios=([4.0] if use_umap else []) + [1.0] * k)
    if use_umap:
        from ae_ot.evaluation.embedding import CodeEmbedding

        embedding = CodeEmbedding(result["reference_codes"], n_neighbors=15, seed=seed)
        embedded = embedding.positions
        score_of = {r["sampler"]: r["gap_score"] for r in result["rows"]}
        for column, name in enumerate(names):
            ax = fig.add_subplot(grid_spec[0, column])
            ax.scatter(embedded[:, 0], embedded[:, 1], c=result["reference_labels"].numpy(), cmap="tab10", s=1.5,
                       alpha=0.5)
            points = embedding.place(result["codes"][name][:shown])
            ax.scatter(points[:, 0], points[:, 1], c="k", s=4, marker="x", linewidths=0.6)
            ax.set_title(f"{SAMPLER_NAMES.get(name, name)}\ngap score {100 * score_of[name]:.1f}%", fontsize=10)
            ax.set_xticks([]), ax.set_yticks([])
    for row, name in enumerate(names):
        ax = fig.add_subplot(grid_spec[rows_top + row, :])
        strip = make_grid(result["samples"][name][:per_row], nrow=per_row)[0].numpy()
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(SAMPLER_NAMES.get(name, name), rotation=0, ha="right", va="center", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return finish_figure(fig, path)


def plot_steps(steps_rows: list[dict], straightness_of: dict, path: Path) -> Path:
    """FID, precision and recall against the number of ODE steps, one line per flow (log x)."""
    plt = pyplot()
    keys = [("fid_classifier", "FID (classifier features) ↓"), ("precision_k3", "precision ↑"),
            ("recall_k3", "recall ↑")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.6))
    for name in dict.fromkeys(r["sampler"] for r in steps_rows):
        rows = sorted((r for r in steps_rows if r["sampler"] == name), key=lambda r: r["num_steps"])
        msd = straightness_of.get(name)
        label = SAMPLER_NAMES.get(name, name) + ("" if msd is None else f" (path MSD {msd:.3f})")
        for ax, (key, _) in zip(axes, keys):
            ax.plot([r["num_steps"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    steps = sorted({r["num_steps"] for r in steps_rows})
    for ax, (key, title) in zip(axes, keys):
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(k) for k in steps])
        ax.minorticks_off()
        ax.set_xlabel(f"ODE steps ({steps_rows[0]['solver']})" if steps_rows else "ODE steps")
        ax.set_title(title, fontsize=10)
        if key == "fid_classifier":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    return finish_figure(fig, path)


def _summary(result: dict, steps_rows, straightness_of, command: str, num_samples: int, seed: int,
             copy_tolerance: float) -> dict:
    return {"command": command, "num_samples": num_samples, "seed": seed,
            "gap_threshold": result["gap_threshold"], "num_reference_codes": int(result["reference_codes"].shape[0]),
            "num_train_codes": result["num_train_codes"],
            "reference_median_nn_distance": result["reference_median_nn_distance"],
            "copy_tolerance": copy_tolerance, "rows": result["rows"], "steps": steps_rows,
            "straightness_msd": straightness_of, "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def write_latent_reports(out: Path, result: dict, steps_rows: list[dict], straightness_of: dict, command: str, *,
                         num_samples: int, seed: int, copy_tolerance: float, use_umap: bool = True) -> dict:
    """Write ``latent_compare.md``, ``latent_compare.json``, ``latent_compare.png`` and
    ``latent_steps.png`` into ``out``, each atomically, and print the markdown; returns the summary
    written to the JSON (the options, the rows of :func:`~ae_ot.experiments.latent.compare_latent_samplers`,
    the step study, the straightness, the threads and the load)."""
    from ae_ot.io import atomic_write, write_json_atomic

    markdown = markdown_report(result, steps_rows, straightness_of, command)
    atomic_write(out / "latent_compare.md", lambda p: p.write_text(markdown))
    summary = _summary(result, steps_rows, straightness_of, command, num_samples, seed, copy_tolerance)
    write_json_atomic(summary, out / "latent_compare.json")
    plot_overview(result, out / "latent_compare.png", use_umap=use_umap, seed=seed)
    plot_steps(steps_rows, straightness_of, out / "latent_steps.png")
    print(markdown)
    print(f"wrote {out / 'latent_compare.md'}, {out / 'latent_compare.json'}, {out / 'latent_compare.png'}, "
          f"{out / 'latent_steps.png'}")
    return summary
