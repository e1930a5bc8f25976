"""Benchmark: quality of an AE-OT checkpoint against the issue's goals.

    .venv/bin/python scripts/bench_aeot.py --ckpt_path outputs/demo/lightning_logs/version_0/checkpoints/*.ckpt

Measures on ``--num_samples`` samples (default 10,000, seed 0):

* digit classes present, KL(class histogram || uniform) and the fraction of samples the project's
  MNIST classifier labels with confidence >= 0.9 (goals: 10 classes, KL <= 0.02, >= 95%);
* the fraction of generated codes equal to a training code (goal: < 10% with the extension);
* gap scores of naive Gaussian latent samples and of AE-OT samples (goal: OT <= naive / 3),
  against ``--num_codes`` training codes;
* the same numbers for the plain map (``extension="none"``) as a reference.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import torch


def sample_quality(model, classifier, train_codes, num_samples: int, seed: int) -> dict:
    """Generate ``num_samples`` codes with the model's current map settings, decode and classify
    them: digit classes, KL to uniform, confident fraction, mean confidence, copies of training codes."""
    from ae_ot.evaluation import extract_features, kl_to_uniform
    from ae_ot.evaluation.latent import copy_fraction

    with torch.no_grad():
        codes = model.latent_samples(num_samples, torch.Generator().manual_seed(seed))
        images = torch.cat([model.decode(c) for c in codes.split(1000)]).clamp(0, 1)
    _, probs = extract_features(images, classifier)
    confidence, prediction = probs.reshape(images.shape[0], -1).max(1)
    counts = torch.bincount(prediction, minlength=10)
    return {"classes": int((counts > 0).sum()), "kl_to_uniform": kl_to_uniform(counts.numpy()),
            "confident_0.9": (confidence >= 0.9).float().mean().item(), "mean_confidence": confidence.mean().item(),
            "copies_of_training_codes": copy_fraction(codes, train_codes)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=int, default=10000)
    parser.add_argument("--num_codes", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from ae_ot.checkpoint import load_generator
    from ae_ot.commands.umap import latent_gap_report
    from ae_ot.datasets import load_mnist
    from ae_ot.evaluation import get_classifier
    model = load_generator(args.ckpt_path)
    classifier = get_classifier(progress=True)
    train_codes = model.sampler.target_codes()
    rows = {}
    for mode in ("extended", "none"):
        model.sampler.settings = dataclasses.replace(model.sampler.settings, extension=mode)
        rows[mode] = sample_quality(model, classifier, train_codes, args.num_samples, args.seed)
    model.sampler.settings = dataclasses.replace(model.sampler.settings, extension="extended")
    splits = load_mnist()
    keep = torch.randperm(splits.train_images.shape[0], generator=torch.Generator().manual_seed(args.seed))
    keep = keep[: args.num_codes]
    gaps = latent_gap_report(model, splits.train_images[keep], splits.train_labels[keep],
                             num_samples=args.num_samples, seed=args.seed, output=None, progress=False)
    report = model.sampler.report or {}
    final = (report.get("history") or [{}])[-1]
    print(f"checkpoint {args.ckpt_path}; load {os.getloadavg()[0]:.2f}")
    nan = float("nan")
    print(f"OT solve: N={model.sampler.targets.shape[0]}, d={model.sampler.targets.shape[1]}, {report.get('steps')} steps, "
          f"{report.get('wall_time', nan):.1f} s, held-out mean rel. error {100 * final.get('mean_rel', nan):.2f}% "
          f"(noise floor {100 * final.get('noise_floor', nan):.2f}%, "
          f"corrected {100 * final.get('mean_rel_corrected', nan):.2f}%)")
    print("| map | classes | KL to uniform | conf >= 0.9 | mean conf | copies of training codes |")
    print("|---|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['classes']}/10 | {r['kl_to_uniform']:.4f} | {100 * r['confident_0.9']:.1f}% | "
              f"{r['mean_confidence']:.3f} | {100 * r['copies_of_training_codes']:.1f}% |")
    print(f"gap score ({args.num_samples} samples vs {args.num_codes} training codes): naive "
          f"{100 * gaps['gap_score_naive']:.2f}%, AE-OT {100 * gaps['gap_score_ot']:.2f}% "
          f"(ratio {gaps['ratio_ot_to_naive']:.3f}; goal <= 0.333)")


if __name__ == "__main__":
    main()
