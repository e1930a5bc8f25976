r"""``ae-ot latent-compare``: four latent samplers on one autoencoder, decoded by the same decoder.

    ae-ot latent-compare --ckpt_path AEOT.ckpt --ot_cfm_ckpt OT.ckpt --independent_cfm_ckpt IND.ckpt \
        --num_samples 10000 --output_dir latent_compare

The samplers, all in the latent space of the AE-OT checkpoint's autoencoder:

* **naive Gaussian**: z ~ N(mean, cov) of the training codes;
* **AE-OT**: uniform noise -> extended semi-discrete OT map (An et al. 2020);
* **OT-CFM**: N(0, I) -> flow matching ODE, minibatch OT couplings (Tong et al. 2023; Pooladian
  et al. 2023), :class:`~ae_ot.generators.LatentFlowMatching` with ``coupling="ot"``;
* **independent CFM**: the same with independent couplings (Lipman et al. 2023).

A flow checkpoint that is not given is trained first (``ae-ot fit --config --flow_config
--model.autoencoder_ckpt=CKPT``, in a subprocess, into ``<output_dir>/runs``). A flow checkpoint
whose encoder/decoder differ from the AE-OT checkpoint's is refused.

Per sampler: the metrics of :func:`ae_ot.evaluation.evaluate_samples` (FID on the project's MNIST
classifier features, precision/recall, density/coverage, classes, KL to uniform), the gap score of
``ae-ot umap`` (:func:`ae_ot.evaluation.latent.gap_score`), the fraction of generated codes that copy a
training code (nearest training code closer than ``--copy_tolerance``), the median distance to
the nearest training code relative to the training codes' own median nearest-neighbour distance
(0: copies; about 1: new codes as far from the training codes as those are from each other),
the sampling time per 10,000 images (latent only, and with decoding), and the training time of
the latent stage (naive: encoding + mean/covariance here; AE-OT: its checkpoint's encode + OT
solve; flows: their checkpoint's encode + flow training).

Also, for both flows: quality against the number of ODE steps (``--steps``, default 1 2 5 10 20 50)
and the straightness of their paths (mean squared deviation from the chord,
:func:`ae_ot.flow_matching.chord_deviation`, on a 100-step midpoint solve).

Writes ``latent_compare.md``, ``latent_compare.json``, ``latent_compare.png`` (UMAP of the
training codes with each sampler's codes over it, and a row of decoded samples per sampler) and
``latent_steps.png`` (quality against ODE steps) into ``--output_dir``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from ae_ot.checks import UserInputError
from ae_ot.commands.parsing import CommandParser, command_line, function_parser, run_function
from ae_ot.generators.autoencoder import gaussian_sampler, sample_gaussian
from ae_ot.io import atomic_write, write_json_atomic
from ae_ot.viz import save_figure

__all__ = ["main", "latent_compare", "build_parser", "SAMPLER_NAMES", "check_same_autoencoder", "train_flow",
           "compare_latent_samplers", "steps_study", "straightness", "markdown_report", "plot_overview", "plot_steps"]

#: display names of the four samplers, in table order
SAMPLER_NAMES = {"naive": "naive Gaussian", "aeot": "AE-OT (extended map)", "ot_cfm": "OT-CFM",
                 "independent_cfm": "independent CFM"}
#: the coupling each flow slot must have been trained with
FLOW_COUPLINGS = {"ot_cfm": "ot", "independent_cfm": "independent"}
DEFAULT_STEPS = (1, 2, 5, 10, 20, 50)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def check_same_autoencoder(aeot, flow, flow_path, aeot_path) -> None:
    """ValueError unless ``flow``'s encoder and decoder weights equal ``aeot``'s."""
    for part in ("encoder", "decoder"):
        ours, theirs = getattr(aeot, part).state_dict(), getattr(flow, part).state_dict()
        same = ours.keys() == theirs.keys() and all(
            ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k]) for k in ours)
        if not same:
            raise UserInputError(
                f"the flow checkpoint must be trained on the autoencoder of {aeot_path} (same {part} weights), got "
                f"{flow_path} whose {part} differs; train it with `ae-ot fit --config models/latent_flow.yaml "
                f"--model.autoencoder_ckpt={aeot_path}`")


def _load_aeot(path):
    from ae_ot.checkpoint import load_generator

    model = load_generator(path)
    if not (hasattr(model, "latent_samples") and getattr(model, "has_ot_solution", False)):
        raise UserInputError(f"--ckpt_path must be an AE-OT checkpoint with an OT solution, got {path} holding a "
                             f"{type(model).__name__}" + (" without one" if hasattr(model, "has_ot_solution") else ""))
    return model


def _training_split(ckpt_path, data_dir: str):
    """The MNIST training split a checkpoint was fitted on (its DataModule's saved val_size, seed
    and subset; MNISTDataModule's defaults when it saved none): (images [N, 1, 28, 28], labels [N])."""
    from ae_ot.data import MNISTDataModule

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    saved = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    split_args = {k: saved[k] for k in ("val_size", "seed", "subset") if k in saved}
    datamodule = MNISTDataModule(data_dir=data_dir, **split_args)
    datamodule.setup("fit")
    return datamodule.train_set.images, datamodule.train_set.labels


def _load_flow(path, slot: str, aeot, aeot_path):
    from ae_ot.checkpoint import load_generator
    from ae_ot.generators.latent_flow import LatentFlowMatching

    flow = load_generator(path)
    if not isinstance(flow, LatentFlowMatching):
        raise UserInputError(f"--{slot}_ckpt must be a LatentFlowMatching checkpoint, got {path} holding a "
                             f"{type(flow).__name__}")
    coupling = flow.hparams.coupling
    if coupling != FLOW_COUPLINGS[slot]:
        raise UserInputError(f"--{slot}_ckpt must be trained with coupling={FLOW_COUPLINGS[slot]!r}, got {path} "
                             f"with coupling={coupling!r}")
    flow._check_flow_trained()
    check_same_autoencoder(aeot, flow, path, aeot_path)
    return flow


def train_flow(config: str | Path, autoencoder_ckpt: str | Path, coupling: str, run_dir: Path,
               fit_args: list[str] | None = None, architecture: dict | None = None) -> Path:
    """Train a flow in a subprocess, ``ae-ot fit --config <config> --model.autoencoder_ckpt=<ckpt>
    --model.coupling=<coupling>`` (log in ``run_dir/fit.log``); returns the newest checkpoint it wrote.

    ``architecture`` (e.g. the autoencoder's ``{"latent_dim": 16, "width": 16}``) becomes
    ``--model.<key>=<value>`` arguments, before ``fit_args`` (which can override them)."""
    from ae_ot.commands.compare import newest_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ae_ot", "fit", "--config", str(config),
           f"--model.autoencoder_ckpt={autoencoder_ckpt}", f"--model.coupling={coupling}",
           f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
           *(f"--model.{key}={value}" for key, value in (architecture or {}).items()), *(fit_args or [])]
    log_path = run_dir / "fit.log"
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    ckpt = newest_checkpoint(run_dir) if returncode == 0 else None
    if ckpt is None:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
        raise UserInputError(f"training the {coupling} flow failed (exit {returncode}; log {log_path}): {tail}")
    return ckpt


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------
def _timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


@torch.no_grad()
def _draw_codes(sampler, n: int, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """Codes [n, d] of ``sampler(count, generator)``, in batches with one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([sampler(min(batch_size, n - s), generator).float().cpu() for s in range(0, n, batch_size)])


@torch.no_grad()
def _decode(model, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([model.decode(codes[s:s + batch_size].to(model.device)).float().cpu()
                      for s in range(0, codes.shape[0], batch_size)]).clamp(0, 1)


def straightness(flow, num_samples: int = 2000, num_steps: int = 100, seed: int = 0) -> float:
    """Mean squared deviation from the chord of ``num_samples`` midpoint paths of ``num_steps``
    steps, in the flow's normalised latent space (:func:`ae_ot.flow_matching.chord_deviation`)."""
    from ae_ot.flow_matching import chord_deviation

    with torch.no_grad():
        path = flow.latent_samples(num_samples, torch.Generator().manual_seed(seed), num_steps=num_steps,
                                   solver="midpoint", return_path=True)
    return chord_deviation(path.cpu())


def _latent_scores(codes, train_codes, reference_codes, gap_threshold, reference_median_nn, copy_tolerance) -> dict:
    from ae_ot.evaluation.latent import gap_score, nearest_neighbour_distances

    nearest_all = nearest_neighbour_distances(train_codes, codes)
    nearest_reference = nearest_neighbour_distances(reference_codes, codes)
    return {"gap_score": gap_score(codes, reference_codes, threshold=gap_threshold),
            "copies_of_training_codes": (nearest_all < copy_tolerance).float().mean().item(),
            "relative_nn_distance": nearest_reference.median().item() / max(reference_median_nn, 1e-12)}


def steps_study(flows: dict, decoder_model, steps, num_samples: int, seed: int = 0, solver: str = "midpoint",
                classifier=None, reference=None, train_reference_codes=None, gap_threshold=None,
                progress: bool = True) -> list[dict]:
    """Quality against the number of ODE steps: for each flow (name -> LatentFlowMatching) and each
    step count, ``num_samples`` codes from the same noise (``seed``), decoded by ``decoder_model``
    and scored (FID, precision/recall, density/coverage, KL; gap score when reference codes are
    given). Returns one row per (flow, steps)."""
    from ae_ot.evaluation import evaluate_samples
    from ae_ot.evaluation.latent import gap_score
    from ae_ot.flow_matching import check_num_steps

    rows = []
    for name, flow in flows.items():
        for k in steps:
            check_num_steps(k)
            codes, seconds = _timed(lambda: _draw_codes(
                lambda n, g: flow.latent_samples(n, g, num_steps=k, solver=solver), num_samples, seed))
            metrics = evaluate_samples(_decode(decoder_model, codes), classifier=classifier, reference=reference,
                                       seed=seed)
            row = {"sampler": name, "num_steps": k, "solver": solver,
                   "velocity_evaluations": k * (2 if solver == "midpoint" else 1),
                   "latent_seconds_per_10k": seconds * 10000 / num_samples,
                   **{key: metrics[key] for key in ("fid_classifier", "precision_k3", "recall_k3", "density_k5",
                                                    "coverage_k5", "kl_to_uniform", "modes_covered")}}
            if train_reference_codes is not None:
                row["gap_score"] = gap_score(codes, train_reference_codes, threshold=gap_threshold)
            rows.append(row)
            if progress:
                print(f"  {SAMPLER_NAMES.get(name, name)} {k:3d} {solver} steps: FID {row['fid_classifier']:.2f}",
                      flush=True)
    return rows


def compare_latent_samplers(aeot, flows: dict, train_images: torch.Tensor, train_labels: torch.Tensor,
                            num_samples: int = 10000, num_codes: int = 10000, seed: int = 0,
                            copy_tolerance: float = 1e-4, classifier=None, reference=None,
                            progress: bool = True) -> dict:
    """Score the four latent samplers (module docstring) on one autoencoder.

    Parameters
    ----------
    aeot : AEOT
        Its encoder encodes ``train_images`` [N, 1, 28, 28]; its decoder decodes every sampler's codes.
    flows : dict
        ``{"ot_cfm": LatentFlowMatching, "independent_cfm": LatentFlowMatching}`` on the same autoencoder.
    train_images, train_labels : [N, 1, 28, 28], [N]
        The training split the samplers were fitted on (codes for the naive Gaussian, copies,
        gap reference, UMAP).
    classifier, reference
        Passed to :func:`ae_ot.evaluation.evaluate_samples` (default: the project's classifier and
        the MNIST training split).

    Returns
    -------
    dict with ``rows`` (one per sampler: metrics, latent scores, timings), the codes and decoded
    samples of each sampler (``codes``, ``samples``: name -> tensor, not JSON), the training codes
    and the reference subset used for the gap score and the UMAP.
    """
    from ae_ot.evaluation import evaluate_samples
    from ae_ot.evaluation.latent import gap_threshold, nearest_neighbour_distances

    aeot.eval()
    train_codes, encode_seconds = _timed(lambda: aeot.encode_dataset(train_images, progress=progress).cpu())
    keep = torch.randperm(train_codes.shape[0], generator=torch.Generator().manual_seed(seed))[:num_codes]
    reference_codes, reference_labels = train_codes[keep], train_labels[keep]
    threshold = gap_threshold(reference_codes)
    reference_median_nn = nearest_neighbour_distances(reference_codes).median().item()

    (mean, chol), fit_seconds = _timed(lambda: gaussian_sampler(train_codes))
    samplers = {"naive": lambda n, g: sample_gaussian(mean, chol, n, g),
                "aeot": lambda n, g: aeot.latent_samples(n, g)}
    for name, flow in flows.items():
        samplers[name] = (lambda f: (lambda n, g: f.latent_samples(n, g)))(flow)
    report = aeot.sampler.report or {}
    train_seconds = {"naive": encode_seconds + fit_seconds,
                     "aeot": report.get("encode_and_solve_seconds", report.get("wall_time"))}
    for name, flow in flows.items():
        train_seconds[name] = float(flow.latent_stage_seconds)

    rows, codes_of, samples_of = [], {}, {}
    for name, sampler in samplers.items():
        if progress:
            print(f"sampling and scoring {SAMPLER_NAMES.get(name, name)}", flush=True)
        codes, latent_seconds = _timed(lambda: _draw_codes(sampler, num_samples, seed))
        images, decode_seconds = _timed(lambda: _decode(aeot, codes))
        metrics = evaluate_samples(images, classifier=classifier, reference=reference, seed=seed)
        row = {"sampler": name, "name": SAMPLER_NAMES.get(name, name), "num_samples": num_samples,
               "metrics": metrics,
               **_latent_scores(codes, train_codes, reference_codes, threshold, reference_median_nn, copy_tolerance),
               "latent_seconds_per_10k": latent_seconds * 10000 / num_samples,
               "sample_seconds_per_10k": (latent_seconds + decode_seconds) * 10000 / num_samples,
               "latent_train_seconds": train_seconds.get(name)}
        if name in flows:
            row["num_steps"], row["solver"] = flows[name].hparams.num_steps, flows[name].hparams.solver
            row["flow_trained_steps"] = int(flows[name].flow_trained_steps)
        rows.append(row)
        codes_of[name], samples_of[name] = codes, images
    return {"rows": rows, "codes": codes_of, "samples": samples_of, "train_codes": train_codes,
            "reference_codes": reference_codes, "reference_labels": reference_labels, "gap_threshold": threshold,
            "reference_median_nn_distance": reference_median_nn, "num_train_codes": int(train_codes.shape[0])}


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
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
             "Inception.\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result["rows"]:
        m = r["metrics"]
        name = r["name"] + (f" ({r['num_steps']} {r['solver']} steps)" if "num_steps" in r else "")
        cells = [name, f"{m['fid_classifier']:.2f}", f"{m['precision_k3']:.3f}", f"{m['recall_k3']:.3f}",
                 f"{m['density_k5']:.3f}", f"{m['coverage_k5']:.3f}", f"{m['modes_covered']}/{m['num_modes']}",
                 f"{m['kl_to_uniform']:.4f}", f"{100 * r['gap_score']:.1f}%",
                 f"{100 * r['copies_of_training_codes']:.1f}%",
                 f"{r['relative_nn_distance']:.2f}", _seconds(r["latent_seconds_per_10k"]),
                 _seconds(r["sample_seconds_per_10k"]), _seconds(r["latent_train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![latent samplers](latent_compare.png)", ""]
    if steps_rows:
        steps = sorted({r["num_steps"] for r in steps_rows})
        names = list(dict.fromkeys(r["sampler"] for r in steps_rows))
        lines += [f"## Quality against ODE steps ({steps_rows[0]['solver']}, "
                  f"FID on the classifier features; precision / recall)\n",
                  "| flow | " + " | ".join(f"{k} steps" for k in steps) + " | path MSD from chord ↓ |",
                  "|" + "---|" * (len(steps) + 2)]
        for name in names:
            by_steps = {r["num_steps"]: r for r in steps_rows if r["sampler"] == name}
            cells = [f"{by_steps[k]['fid_classifier']:.2f} ({by_steps[k]['precision_k3']:.2f} / "
                     f"{by_steps[k]['recall_k3']:.2f})" for k in steps]
            msd = straightness_of.get(name)
            lines.append(f"| {SAMPLER_NAMES.get(name, name)} | " + " | ".join(cells) + " | "
                         + ("-" if msd is None else f"{msd:.4f}") + " |")
        lines += ["", "Path MSD: mean over samples and times of |z(t) - ((1 - t) z(0) + t z(1))|^2 on a 100-step "
                  "midpoint solve, in the normalised latent space (lower: straighter).", "",
                  "![quality against ODE steps](latent_steps.png)", ""]
    return "\n".join(lines)


def plot_overview(result: dict, path: Path, use_umap: bool = True, per_row: int = 16, shown: int = 1000,
                  seed: int = 0) -> Path:
    """Top: UMAP of the reference training codes (coloured by digit) with each sampler's codes over
    it (skipped without ``use_umap``); below: one row of ``per_row`` decoded samples per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_steps(steps_rows: list[dict], straightness_of: dict, path: Path) -> Path:
    """FID, precision and recall against the number of ODE steps, one line per flow (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _json_ready(result: dict, steps_rows, straightness_of, command: str, num_samples: int, seed: int,
                copy_tolerance: float) -> dict:
    return {"command": command, "num_samples": num_samples, "seed": seed,
            "gap_threshold": result["gap_threshold"], "num_reference_codes": int(result["reference_codes"].shape[0]),
            "num_train_codes": result["num_train_codes"],
            "reference_median_nn_distance": result["reference_median_nn_distance"],
            "copy_tolerance": copy_tolerance, "rows": result["rows"], "steps": steps_rows,
            "straightness_msd": straightness_of, "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def _check_options(ckpt_path, ot_cfm_ckpt, independent_cfm_ckpt, flow_config, num_samples, num_codes, steps,
                   steps_num_samples, copy_tolerance, output_dir) -> None:
    """Every check that needs no model: raises UserInputError or FileNotFoundError naming the option
    (each checkpoint is read and must be of its kind; the output folder must take files)."""
    from ae_ot.checkpoint import check_generator_checkpoint
    from ae_ot.flow_matching import check_num_steps
    from ae_ot.generators import AEOT, LatentFlowMatching
    from ae_ot.io import check_writable_path

    for name, value in (("num_samples", num_samples), ("steps_num_samples", steps_num_samples)):
        if value < 6:
            raise UserInputError(f"--{name} must be at least 6 (k + 1 for the k=5 density/coverage), got {value}")
    if num_codes < 10:
        raise UserInputError(f"--num_codes must be at least 10, got {num_codes}")
    if not copy_tolerance > 0:
        raise UserInputError(f"--copy_tolerance must be positive, got {copy_tolerance}")
    for k in steps:
        check_num_steps(k)
    for option, path, kind in (("--ckpt_path", ckpt_path, AEOT), ("--ot_cfm_ckpt", ot_cfm_ckpt, LatentFlowMatching),
                               ("--independent_cfm_ckpt", independent_cfm_ckpt, LatentFlowMatching)):
        if path is not None:
            check_generator_checkpoint(path, kind, option)
    if (ot_cfm_ckpt is None or independent_cfm_ckpt is None) and not Path(flow_config).is_file():
        raise FileNotFoundError(f"flow config {flow_config} does not exist (needed to train the missing flows)")
    check_writable_path(Path(output_dir) / "latent_compare.md", "--output_dir")


def latent_compare(ckpt_path: str, ot_cfm_ckpt: str | None = None, independent_cfm_ckpt: str | None = None,
                   flow_config: str = "models/latent_flow.yaml", fit_args: str = "", num_samples: int = 10000,
                   num_codes: int = 10000, steps: Sequence[int] = DEFAULT_STEPS,
                   steps_solver: Literal["midpoint", "euler"] = "midpoint", steps_num_samples: int = 5000,
                   copy_tolerance: float = 1e-4, seed: int = 0, data_dir: str = "data",
                   output_dir: str = "latent_compare", no_umap: bool = False, no_progress: bool = False, *,
                   classifier=None, reference=None, command: str | None = None) -> dict:
    """Score the four latent samplers of one autoencoder (module docstring), training the flows not
    given; write the report, the JSON and the figures into ``output_dir``.

    Parameters
    ----------
    ckpt_path : str
        AE-OT checkpoint (its autoencoder, codes and OT solution)
    ot_cfm_ckpt : str, optional
        LatentFlowMatching checkpoint, coupling=ot (default: trained now on --ckpt_path's autoencoder)
    independent_cfm_ckpt : str, optional
        LatentFlowMatching checkpoint, coupling=independent (default: trained now)
    flow_config : str
        config of the flows trained here
    fit_args : str
        extra `ae-ot fit` arguments for the flows trained here, e.g. "--model.flow_epochs=20"
    num_samples : int
        samples per sampler
    num_codes : int
        training codes of the gap-score reference and the UMAP, as in `ae-ot umap`
    steps : sequence of int
        ODE step counts to score
    steps_solver : {"midpoint", "euler"}
        ODE solver of the step-count study
    steps_num_samples : int
        samples per step count
    copy_tolerance : float
        a generated code closer than this to a training code is a copy
    seed : int
        seed of the samples, the reference subset and the UMAP
    data_dir : str
        where MNIST IDX files are looked for
    output_dir : str
        folder of latent_compare.md/json/png, latent_steps.png and the flows trained here
    no_umap : bool
        skip the UMAP panels of the figure (about 20 s on 10,000 codes)
    no_progress : bool
        no progress lines and bars
    classifier, reference : optional
        override the evaluation's defaults (not options; tests pass small ones)
    command : str, optional
        the command recorded in the report (not an option; ``main`` gives what was typed; default: a
        command line with these options)

    Returns
    -------
    dict
        The summary written to latent_compare.json.
    """
    options = dict(ckpt_path=ckpt_path, ot_cfm_ckpt=ot_cfm_ckpt, independent_cfm_ckpt=independent_cfm_ckpt,
                   flow_config=flow_config, num_samples=num_samples, num_codes=num_codes, steps=list(steps),
                   steps_num_samples=steps_num_samples, copy_tolerance=copy_tolerance)
    _check_options(**options, output_dir=output_dir)
    command = command or command_line("ae-ot latent-compare", dict(
        options, fit_args=fit_args, steps_solver=steps_solver, seed=seed, data_dir=data_dir, output_dir=output_dir,
        no_umap=no_umap, no_progress=no_progress))
    out = Path(output_dir)
    aeot = _load_aeot(ckpt_path)
    if classifier is None and reference is None:   # before training flows: a cache that cannot hold it is refused
        from ae_ot.evaluation import get_classifier

        classifier = get_classifier(progress=not no_progress)
    out.mkdir(parents=True, exist_ok=True)
    architecture = {k: aeot.hparams[k] for k in ("latent_dim", "width", "channels", "loss") if k in aeot.hparams}
    given = {slot: path for slot, path in (("ot_cfm", ot_cfm_ckpt), ("independent_cfm", independent_cfm_ckpt)) if path}
    flows = {slot: _load_flow(path, slot, aeot, ckpt_path) for slot, path in given.items()}  # checked before training
    for slot in ("ot_cfm", "independent_cfm"):
        if slot not in given:
            print(f"training the {SAMPLER_NAMES[slot]} flow on {ckpt_path} -> {out / 'runs' / slot}", flush=True)
            path = train_flow(flow_config, ckpt_path, FLOW_COUPLINGS[slot], out / "runs" / slot, shlex.split(fit_args),
                              architecture)
            flows[slot] = _load_flow(path, slot, aeot, ckpt_path)
    flows = {slot: flows[slot] for slot in ("ot_cfm", "independent_cfm")}

    train_images, train_labels = _training_split(ckpt_path, data_dir)
    result = compare_latent_samplers(aeot, flows, train_images, train_labels, num_samples, num_codes, seed,
                                     copy_tolerance, classifier, reference, progress=not no_progress)
    print("quality against ODE steps", flush=True)
    steps_rows = steps_study(flows, aeot, list(steps), steps_num_samples, seed, steps_solver, classifier, reference,
                             result["reference_codes"], result["gap_threshold"], progress=not no_progress)
    straightness_of = {name: straightness(flow, seed=seed) for name, flow in flows.items()}

    markdown = markdown_report(result, steps_rows, straightness_of, command)
    atomic_write(out / "latent_compare.md", lambda tmp: tmp.write_text(markdown))
    summary = _json_ready(result, steps_rows, straightness_of, command, num_samples, seed, copy_tolerance)
    write_json_atomic(summary, out / "latent_compare.json")
    plot_overview(result, out / "latent_compare.png", use_umap=not no_umap, seed=seed)
    plot_steps(steps_rows, straightness_of, out / "latent_steps.png")
    print(markdown)
    print(f"wrote {out / 'latent_compare.md'}, {out / 'latent_compare.json'}, {out / 'latent_compare.png'}, "
          f"{out / 'latent_steps.png'}")
    return summary


def build_parser() -> CommandParser:
    """``ae-ot latent-compare``'s options: the parameters of :func:`latent_compare` before ``*``."""
    return function_parser("ae-ot latent-compare", latent_compare, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None, classifier=None, reference=None) -> dict:
    """Run the comparison. ``classifier`` / ``reference`` override the evaluation's defaults
    (tests pass small ones)."""
    command = "ae-ot latent-compare " + shlex.join(argv if argv is not None else sys.argv[2:])
    return run_function(build_parser(), latent_compare, argv, classifier=classifier, reference=reference,
                        command=command)
