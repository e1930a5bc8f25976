"""Benchmark: latent flow matching (OT-CFM and independent CFM) on a trained autoencoder.

    .venv/bin/python scripts/bench_latent_flow.py --autoencoder_ckpt AEOT_OR_AUTOENCODER.ckpt --output bench.json

For each coupling (``--couplings``, default ot independent), with the settings of ``--config``
(default models/latent_flow.yaml) and the autoencoder of ``--autoencoder_ckpt`` (frozen):

* the training time of the latent stage: encoding the training split + ``flow_epochs`` epochs of
  flow matching (the model's own clock, ``latent_stage_seconds``), and the wall-clock of
  ``Trainer.fit`` around it (goal: <= 5 min on the 2-core CPU);
* the sampling time of 10,000 images with 20 midpoint steps, decoding included (``model.sample``;
  the best and the median of ``--repeats`` runs; goal: < 10 s), and of the latent codes alone;
* the straightness of the paths (mean squared deviation from the chord, 100 midpoint steps);
* unless ``--quality_samples 0``: sample quality against the number of ODE steps
  (``--steps``, default 1 2 5 10 20 50) on the project's MNIST classifier features (FID,
  precision/recall, density/coverage, KL to uniform); the classifier is trained once if not cached.

Prints markdown tables and writes every number to ``--output`` (JSON). Smoke run (seconds):

    .venv/bin/python scripts/bench_latent_flow.py --autoencoder_ckpt CKPT --subset 2000 --flow_epochs 1 \
        --num_samples 500 --repeats 1 --quality_samples 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autoencoder_ckpt", required=True, help="Autoencoder or AE-OT checkpoint")
    parser.add_argument("--config", default="models/latent_flow.yaml")
    parser.add_argument("--couplings", nargs="+", default=["ot", "independent"], choices=["ot", "independent"])
    parser.add_argument("--flow_epochs", type=int, default=None, help="override the config's flow_epochs")
    parser.add_argument("--max_minutes", type=float, default=None, help="stop the flow training after this long")
    parser.add_argument("--subset", type=int, default=None, help="train on this many images (smoke runs)")
    parser.add_argument("--num_samples", type=int, default=10000, help="images per sampling-time run (default 10000)")
    parser.add_argument("--sample_steps", type=int, default=20, help="midpoint steps of the timed sampling")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--quality_samples", type=int, default=10000, help="samples per step count (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="JSON file for every number")
    return parser


def load_config(path: str) -> tuple[dict, dict]:
    """(model init_args, data init_args) of a Lightning CLI config."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    model = dict((config.get("model") or {}).get("init_args") or {})
    data = dict((config.get("data") or {}).get("init_args") or {})
    return model, data


def train(coupling: str, args, model_args: dict, data_args: dict):
    """Fit one flow on the frozen autoencoder; returns (model, timing dict)."""
    import pytorch_lightning as pl

    from ae_ot.data import MNISTDataModule
    from ae_ot.generators import LatentFlowMatching

    pl.seed_everything(args.seed, verbose=False)
    # the autoencoder's architecture comes from its checkpoint
    saved = torch.load(args.autoencoder_ckpt, map_location="cpu", weights_only=False).get("hyper_parameters") or {}
    architecture = {k: saved[k] for k in ("latent_dim", "width", "channels", "loss") if k in saved}
    overrides = dict(model_args, **architecture, autoencoder_ckpt=args.autoencoder_ckpt, autoencoder_epochs=0,
                     coupling=coupling, grid_every_n_epochs=0)
    if args.flow_epochs is not None:
        overrides["flow_epochs"] = args.flow_epochs
    model = LatentFlowMatching(**overrides)
    datamodule = MNISTDataModule(**dict(data_args, subset=args.subset if args.subset else data_args.get("subset")))
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=-1, default_root_dir=root, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             max_time={"minutes": args.max_minutes} if args.max_minutes else None)
        started = time.perf_counter()
        trainer.fit(model, datamodule)
        fit_seconds = time.perf_counter() - started
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "flow_loss" in k}
    return model.eval(), {"coupling": coupling, "latent_stage_seconds": float(model.latent_stage_seconds),
                          "fit_wall_seconds": fit_seconds, "flow_epochs_done": trainer.current_epoch,
                          "flow_epochs_asked": model.hparams.flow_epochs, "flow_steps": int(model.flow_trained_steps),
                          "batch_size": datamodule.batch_size, "hidden_dim": model.hparams.hidden_dim,
                          "num_layers": model.hparams.num_layers, **metrics}


def sampling_times(model, args) -> dict:
    """Seconds for ``num_samples`` images (decode included) and for their codes alone, with
    ``sample_steps`` midpoint steps; best and median of ``repeats`` runs."""
    model.hparams.num_steps, model.hparams.solver = args.sample_steps, "midpoint"
    with_decoding, latent_only = [], []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        model.sample(args.num_samples, seed=args.seed + repeat)
        with_decoding.append(time.perf_counter() - started)
        generator = torch.Generator().manual_seed(args.seed + repeat)
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, args.num_samples, 1000):
                model.latent_samples(min(1000, args.num_samples - start), generator)
        latent_only.append(time.perf_counter() - started)
    return {"num_samples": args.num_samples, "sample_steps": args.sample_steps,
            "sample_seconds_best": min(with_decoding), "sample_seconds_median": statistics.median(with_decoding),
            "latent_seconds_best": min(latent_only), "latent_seconds_median": statistics.median(latent_only)}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    from ae_ot.experiments.latent import SAMPLER_NAMES, steps_study, straightness

    model_args, data_args = load_config(args.config)
    results = {"command": "scripts/bench_latent_flow.py " + " ".join(argv or sys.argv[1:]),
               "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_average_start": os.getloadavg()[0], "flows": []}
    flows = {}
    for coupling in args.couplings:
        print(f"training the {coupling} flow on {args.autoencoder_ckpt}", flush=True)
        model, timing = train(coupling, args, model_args, data_args)
        timing.update(sampling_times(model, args))
        timing["straightness_msd"] = straightness(model, seed=args.seed)
        results["flows"].append(timing)
        flows["ot_cfm" if coupling == "ot" else "independent_cfm"] = model

    print(f"\ntorch threads {results['torch_threads']}, load average at start {results['load_average_start']:.2f}")
    print(f"| flow | epochs | steps | latent stage s | fit wall s | {args.num_samples} images, {args.sample_steps} "
          "midpoint steps, decoded: best / median s | codes only: best s | path MSD from chord |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["flows"]:
        print(f"| {r['coupling']} | {r['flow_epochs_done']}/{r['flow_epochs_asked']} | {r['flow_steps']} | "
              f"{r['latent_stage_seconds']:.1f} | {r['fit_wall_seconds']:.1f} | {r['sample_seconds_best']:.2f} / "
              f"{r['sample_seconds_median']:.2f} | {r['latent_seconds_best']:.2f} | {r['straightness_msd']:.4f} |")

    if args.quality_samples > 0:
        from ae_ot.evaluation import get_classifier

        classifier = get_classifier(progress=True)
        rows = steps_study(flows, next(iter(flows.values())), args.steps, args.quality_samples, args.seed,
                           "midpoint", classifier)
        results["steps"] = rows
        print(f"\nQuality against midpoint ODE steps ({args.quality_samples} samples): FID (classifier features), "
              "precision / recall")
        print("| flow | " + " | ".join(f"{k} steps" for k in args.steps) + " |")
        print("|---|" + "---|" * len(args.steps))
        for name in flows:
            cells = [f"{r['fid_classifier']:.2f} ({r['precision_k3']:.2f} / {r['recall_k3']:.2f})"
                     for r in rows if r["sampler"] == name]
            print(f"| {SAMPLER_NAMES[name]} | " + " | ".join(cells) + " |")
    results["load_average_end"] = os.getloadavg()[0]
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))
        print(f"numbers written to {args.output}")
    return results


if __name__ == "__main__":
    main()
