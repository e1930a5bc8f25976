"""Four latent samplers on one autoencoder, decoded by the same decoder and scored alike.

The samplers, all in the latent space of an AE-OT checkpoint's autoencoder (the names of
:data:`SAMPLER_NAMES`): the naive Gaussian fit of the training codes, AE-OT's extended
semi-discrete OT map, and two :class:`~ae_ot.generators.LatentFlowMatching` flows from N(0, I),
with minibatch OT couplings (OT-CFM) and with independent ones. Each sampler's decoded images are
scored by :func:`ae_ot.evaluation.scoring.score_samples` and its codes by
:func:`ae_ot.evaluation.latent.code_scores`; the flows also against their number of ODE steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.latent import code_scores, gap_score, gap_threshold, nearest_neighbour_distances
from ae_ot.evaluation.scoring import score_samples
from ae_ot.experiments.children import fit_command, log_tail, newest_checkpoint, run_logged

__all__ = ["SAMPLER_NAMES", "FLOW_COUPLINGS", "check_same_autoencoder", "load_aeot", "load_flow", "training_split",
           "train_flow", "straightness", "steps_study", "compare_latent_samplers"]

#: display names of the four samplers, in table order
SAMPLER_NAMES = {"naive": "naive Gaussian", "aeot": "AE-OT (extended map)", "ot_cfm": "OT-CFM",
                 "independent_cfm": "independent CFM"}
#: the coupling each flow slot must have been trained with
FLOW_COUPLINGS = {"ot_cfm": "ot", "independent_cfm": "independent"}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def check_same_autoencoder(aeot, flow, flow_path, aeot_path) -> None:
    """UserInputError unless ``flow``'s encoder and decoder weights equal ``aeot``'s."""
    for part in ("encoder", "decoder"):
        ours, theirs = getattr(aeot, part).state_dict(), getattr(flow, part).state_dict()
        same = ours.keys() == theirs.keys() and all(
            ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k]) for k in ours)
        if not same:
            raise UserInputError(
                f"the flow checkpoint must be trained on the autoencoder of {aeot_path} (same {part} weights), got "
                f"{flow_path} whose {part} differs; train it with `ae-ot fit --config models/latent_flow.yaml "
                f"--model.autoencoder_ckpt={aeot_path}`")


def load_aeot(path):
    """The AE-OT model of the checkpoint ``path``; UserInputError unless it holds one with an OT solution."""
    from ae_ot.checkpoint import load_generator

    model = load_generator(path)
    if not (hasattr(model, "latent_samples") and getattr(model, "has_ot_solution", False)):
        raise UserInputError(f"--ckpt_path must be an AE-OT checkpoint with an OT solution, got {path} holding a "
                             f"{type(model).__name__}" + (" without one" if hasattr(model, "has_ot_solution") else ""))
    return model


def load_flow(path, slot: str, aeot, aeot_path):
    """The trained flow of the checkpoint ``path`` for ``slot`` (a key of :data:`FLOW_COUPLINGS`),
    checked: a LatentFlowMatching with that slot's coupling, a trained flow, ``aeot``'s autoencoder."""
    from ae_ot.checkpoint import load_generator
    from ae_ot.generators.latent_flow import FlowNotTrainedError, LatentFlowMatching

    flow = load_generator(path)
    if not isinstance(flow, LatentFlowMatching):
        raise UserInputError(f"--{slot}_ckpt must be a LatentFlowMatching checkpoint, got {path} holding a "
                             f"{type(flow).__name__}")
    coupling = flow.hparams.coupling
    if coupling != FLOW_COUPLINGS[slot]:
        raise UserInputError(f"--{slot}_ckpt must be trained with coupling={FLOW_COUPLINGS[slot]!r}, got {path} "
                             f"with coupling={coupling!r}")
    if not flow.flow_is_trained:
        raise FlowNotTrainedError(f"--{slot}_ckpt {path} holds no trained flow: it was written before the flow "
                                  "stage; train it with `ae-ot fit --config models/latent_flow.yaml "
                                  "--model.autoencoder_ckpt=CKPT`")
    check_same_autoencoder(aeot, flow, path, aeot_path)
    return flow


def training_split(ckpt_path, data_dir: str):
    """The MNIST training split a checkpoint was fitted on (its DataModule's saved val_size, seed
    and subset; MNISTDataModule's defaults when it saved none): (images [N, 1, 28, 28], labels [N])."""
    from ae_ot.data import MNISTDataModule

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    saved = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    datamodule = MNISTDataModule(data_dir=data_dir, **{k: saved[k] for k in ("val_size", "seed", "subset") if k in saved})
    datamodule.setup("fit")
    return datamodule.train_set.images, datamodule.train_set.labels


def train_flow(config: str | Path, autoencoder_ckpt: str | Path, coupling: str, run_dir: Path,
               fit_args: list[str] | None = None, architecture: dict | None = None) -> Path:
    """Train a flow in a child process, ``ae-ot fit --config <config> --model.autoencoder_ckpt=<ckpt>
    --model.coupling=<coupling>`` (log in ``run_dir/fit.log``); returns the newest checkpoint it wrote.

    ``architecture`` (e.g. the autoencoder's ``{"latent_dim": 16, "width": 16}``) becomes
    ``--model.<key>=<value>`` arguments, before ``fit_args`` (which can override them).
    UserInputError with the log's last lines when the fit fails or writes no checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = fit_command(config, f"--model.autoencoder_ckpt={autoencoder_ckpt}", f"--model.coupling={coupling}",
                      f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
                      *(f"--model.{key}={value}" for key, value in (architecture or {}).items()), *(fit_args or []))
    log_path = run_dir / "fit.log"
    returncode = run_logged(cmd, log_path)
    ckpt = newest_checkpoint(run_dir) if returncode == 0 else None
    if ckpt is None:
        raise UserInputError(f"training the {coupling} flow failed (exit {returncode}; log {log_path}): "
                             f"{log_tail(log_path)}")
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


def steps_study(flows: dict, decoder_model, steps, num_samples: int, seed: int = 0, solver: str = "midpoint",
                classifier=None, reference=None, train_reference_codes=None, gap_threshold=None,
                progress: bool = True) -> list[dict]:
    """Quality against the number of ODE steps: for each flow (name -> LatentFlowMatching) and each
    step count, ``num_samples`` codes from the same noise (``seed``), decoded by ``decoder_model``
    and scored (FID, precision/recall, density/coverage, KL; gap score when reference codes are
    given). Returns one row per (flow, steps)."""
    from ae_ot.flow_matching import check_num_steps

    rows = []
    for name, flow in flows.items():
        for k in steps:
            check_num_steps(k)
            codes, seconds = _timed(lambda: _draw_codes(
                lambda n, g: flow.latent_samples(n, g, num_steps=k, solver=solver), num_samples, seed))
            metrics = score_samples(_decode(decoder_model, codes), classifier=classifier, reference=reference,
                                    seed=seed, progress=progress)["metrics"]
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


def _samplers(aeot, flows: dict, train_codes: torch.Tensor) -> tuple[dict, float]:
    """name -> ``sampler(n, generator)`` of codes, and the seconds of the naive Gaussian's fit."""
    from ae_ot.generators.autoencoder import gaussian_sampler, sample_gaussian

    (mean, chol), fit_seconds = _timed(lambda: gaussian_sampler(train_codes))
    samplers = {"naive": lambda n, g: sample_gaussian(mean, chol, n, g), "aeot": lambda n, g: aeot.latent_samples(n, g)}
    for name, flow in flows.items():
        samplers[name] = (lambda f: (lambda n, g: f.latent_samples(n, g)))(flow)
    return samplers, fit_seconds


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
        Passed to :func:`ae_ot.evaluation.scoring.score_samples` (default: the project's classifier
        and the MNIST training split).

    Returns
    -------
    dict with ``rows`` (one per sampler: metrics, latent scores, timings), the codes and decoded
    samples of each sampler (``codes``, ``samples``: name -> tensor, not JSON), the training codes
    and the reference subset used for the gap score and the UMAP.
    """
    aeot.eval()
    train_codes, encode_seconds = _timed(lambda: aeot.encode_dataset(train_images, progress=progress).cpu())
    keep = torch.randperm(train_codes.shape[0], generator=torch.Generator().manual_seed(seed))[:num_codes]
    reference_codes, reference_labels = train_codes[keep], train_labels[keep]
    threshold = gap_threshold(reference_codes)
    reference_median_nn = nearest_neighbour_distances(reference_codes).median().item()
    samplers, fit_seconds = _samplers(aeot, flows, train_codes)
    report = aeot.sampler.report or {}
    train_seconds = {"naive": encode_seconds + fit_seconds,
                     "aeot": report.get("encode_and_solve_seconds", report.get("wall_time")),
                     **{name: float(flow.latent_stage_seconds) for name, flow in flows.items()}}
    rows, codes_of, samples_of = [], {}, {}
    for name, sampler in samplers.items():
        if progress:
            print(f"sampling and scoring {SAMPLER_NAMES.get(name, name)}", flush=True)
        codes, latent_seconds = _timed(lambda: _draw_codes(sampler, num_samples, seed))
        images, decode_seconds = _timed(lambda: _decode(aeot, codes))
        metrics = score_samples(images, classifier=classifier, reference=reference, seed=seed,
                                progress=progress)["metrics"]
        row = {"sampler": name, "name": SAMPLER_NAMES.get(name, name), "num_samples": num_samples,
               "metrics": metrics,
               **code_scores(codes, train_codes, reference_codes, threshold, reference_median_nn, copy_tolerance),
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
