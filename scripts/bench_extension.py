"""Sweep the extended map's parameters on an AE-OT checkpoint.

    .venv/bin/python scripts/bench_extension.py --ckpt_path CKPT [--num_samples 5000]

For each (angle_threshold in degrees, radius) it prints the fraction of generated codes that are
copies of training codes, the fraction of samples the project's MNIST classifier labels with
confidence >= 0.9, the KL of the class histogram to uniform and the mean confidence.
"""

from __future__ import annotations

import argparse
import dataclasses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--num_samples", type=int, default=5000)
    parser.add_argument("--settings", default="0:0,25:0.6,30:0.8,30:1.0,35:1.0",
                        help="comma-separated angle:radius pairs; 0:0 is the plain map")
    args = parser.parse_args()

    from bench_aeot import sample_quality  # scripts/ is on sys.path when run as a script

    from ae_ot.checkpoint import load_generator
    from ae_ot.evaluation import get_classifier

    model = load_generator(args.ckpt_path)
    classifier = get_classifier(train_if_missing=True, progress=True)
    train_codes = model.sampler.target_codes()
    print("| angle (deg) | radius | copies | conf >= 0.9 | KL to uniform | mean conf |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings.split(","):
        angle, radius = (float(v) for v in setting.split(":"))
        if angle == 0:
            model.sampler.settings = dataclasses.replace(model.sampler.settings, extension="none")
        else:
            model.sampler.settings = dataclasses.replace(model.sampler.settings, extension="extended",
                                                         angle_threshold=angle, radius=radius)
        r = sample_quality(model, classifier, train_codes, args.num_samples, seed=1)
        print(f"| {angle:g} | {radius:g} | {100 * r['copies_of_training_codes']:.1f}% | {100 * r['confident_0.9']:.1f}% | "
              f"{r['kl_to_uniform']:.4f} | {r['mean_confidence']:.3f} |")


if __name__ == "__main__":
    main()
