"""The extended map's band radius against sample quality and copies, on one trained AE-OT(-GAN).

The band radius is a sampling setting of AE-OT's latent sampler (``ot.radius``), so one trained
model is scored at several radii without retraining: for each radius, ``--num_samples`` codes of
the extended map (seed 0), decoded, scored by :func:`ae_ot.evaluation.evaluate_samples` (the
project's classifier), plus latent copies (codes within ``--copy_tolerance`` of a training code)
and pixel copies (:func:`ae_ot.evaluation.copies.pixel_copy_rate`). One JSON line per radius.

    python scripts/bench_band.py --ckpt_path CKPT --radii 0.4,0.6,0.8 --out band.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from ae_ot.checkpoint import load_generator
from ae_ot.datasets import load_mnist
from ae_ot.evaluation import evaluate_samples, get_classifier
from ae_ot.evaluation.copies import pixel_copy_rate
from ae_ot.evaluation.latent import copy_fraction
from ae_ot.io import atomic_write

KEYS = ("fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5", "modes_covered", "kl_to_uniform")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="an AE-OT or AE-OT-GAN checkpoint with an OT solution")
    parser.add_argument("--radii", default="0.4,0.6,0.8", help="comma-separated band radii")
    parser.add_argument("--num_samples", type=int, default=10000)
    parser.add_argument("--copy_tolerance", type=float, default=1e-4)
    parser.add_argument("--out", default=None, help="JSON lines file (written atomically at the end)")
    args = parser.parse_args()
    model = load_generator(args.ckpt_path).eval()
    if not getattr(model, "has_ot_solution", False):
        parser.error(f"{args.ckpt_path} holds no solved AE-OT sampler")
    splits, classifier = load_mnist(), get_classifier()
    train_codes = model.sampler.target_codes()
    rows = []
    for radius in (float(r) for r in args.radii.split(",")):
        started = time.perf_counter()
        model.sampler.settings = dataclasses.replace(model.sampler.settings, radius=radius)
        codes = model.latent_samples(args.num_samples, torch.Generator().manual_seed(0))
        with torch.no_grad():
            images = torch.cat([model.decode(c) for c in codes.split(1000)]).clamp(0, 1)
        metrics = evaluate_samples(images, classifier=classifier)
        copies = pixel_copy_rate(images, splits.train_images, splits.test_images[:10000])
        latent = copy_fraction(codes, train_codes, args.copy_tolerance)
        row = {"radius": radius, "latent_copies": latent, "pixel_copies": copies["pixel_copies"],
               **{k: metrics[k] for k in KEYS}, "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))


if __name__ == "__main__":
    main()
