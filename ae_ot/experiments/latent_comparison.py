"""The run of ``ae-ot latent-compare`` once its options are checked: the AE-OT checkpoint, the
flows (trained first when not given), the four samplers scored, the step study, the reports."""

from __future__ import annotations

import shlex
from pathlib import Path

from ae_ot.experiments.latent import (
    FLOW_COUPLINGS,
    SAMPLER_NAMES,
    compare_latent_samplers,
    load_aeot,
    load_flow,
    steps_study,
    straightness,
    train_flow,
    training_split,
)
from ae_ot.experiments.latent_report import write_latent_reports

__all__ = ["load_flows", "run_latent_comparison"]


def load_flows(aeot, ckpt_path: str, flow_paths: dict, flow_config: str, fit_args: str, out: Path) -> dict:
    """slot -> the checked flow of each slot of :data:`~ae_ot.experiments.latent.FLOW_COUPLINGS`:
    ``flow_paths[slot]``, or a flow trained now on ``ckpt_path``'s autoencoder with ``flow_config``
    and ``fit_args`` into ``out/runs/<slot>``."""
    architecture = {k: aeot.hparams[k] for k in ("latent_dim", "width", "channels", "loss") if k in aeot.hparams}
    # the given flows are checked before any flow is trained
    given = {slot: load_flow(flow_paths[slot], slot, aeot, ckpt_path) for slot in FLOW_COUPLINGS if flow_paths.get(slot)}
    flows = {}
    for slot in FLOW_COUPLINGS:
        if slot in given:
            flows[slot] = given[slot]
            continue
        print(f"training the {SAMPLER_NAMES[slot]} flow on {ckpt_path} -> {out / 'runs' / slot}", flush=True)
        path = train_flow(flow_config, ckpt_path, FLOW_COUPLINGS[slot], out / "runs" / slot, shlex.split(fit_args),
                          architecture)
        flows[slot] = load_flow(path, slot, aeot, ckpt_path)
    return flows


def run_latent_comparison(ckpt_path: str, flow_paths: dict, *, flow_config: str, fit_args: str, num_samples: int,
                          num_codes: int, steps: list[int], steps_solver: str, steps_num_samples: int,
                          copy_tolerance: float, seed: int, data_dir: str, output_dir: str, use_umap: bool,
                          progress: bool, classifier=None, reference=None, command: str) -> dict:
    """Score the four latent samplers of ``ckpt_path``'s autoencoder and write the reports into
    ``output_dir`` (the options of :func:`ae_ot.commands.latent_compare.latent_compare`, checked);
    returns the summary written to ``latent_compare.json``."""
    out = Path(output_dir)
    aeot = load_aeot(ckpt_path)
    if classifier is None and reference is None:   # before training flows: a cache that cannot hold it is refused
        from ae_ot.evaluation import get_classifier  # looked up on call: tests put a small one there

        classifier = get_classifier(progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    flows = load_flows(aeot, ckpt_path, flow_paths, flow_config, fit_args, out)
    train_images, train_labels = training_split(ckpt_path, data_dir)
    result = compare_latent_samplers(aeot, flows, train_images, train_labels, num_samples, num_codes, seed,
                                     copy_tolerance, classifier, reference, progress=progress)
    print("quality against ODE steps", flush=True)
    steps_rows = steps_study(flows, aeot, steps, steps_num_samples, seed, steps_solver, classifier, reference,
                             result["reference_codes"], result["gap_threshold"], progress=progress)
    straightness_of = {name: straightness(flow, seed=seed) for name, flow in flows.items()}
    return write_latent_reports(out, result, steps_rows, straightness_of, command, num_samples=num_samples, seed=seed,
                                copy_tolerance=copy_tolerance, use_umap=use_umap)
