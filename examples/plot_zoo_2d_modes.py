"""The model zoo on 2-D modes: 8 Gaussians on a circle, 8,000 points.

Every generator of the zoo is trained on the same points (``ae_ot.data.Points2DDataModule``),
with MLP networks for vector data (``net="mlp"``: ``ae_ot.nets.MLPGenerator``/``MLPCritic``):

* WGAN, weight clipping (Arjovsky et al., 2017) and WGAN-GP, gradient penalty (Gulrajani et al., 2017);
* a generator trained on the debiased Sinkhorn divergence S_eps (Feydy et al., AISTATS 2019);
* a generator trained on the minibatch Wasserstein loss (Fatras et al., AISTATS 2020);
* semi-discrete OT straight on the points (An et al., ICLR 2020, without the autoencoder, which
  2-D data does not need): the Brenier potential u_h(x) = max_i <x, y_i> + h_i pushes the uniform
  measure on [-1, 1]^2 onto all 8,000 points (``--sdot_points`` takes a seeded subsample; the
  exact 2-D Newton method converges on all of them in ~15 steps, ~40 s on a 2-core CPU); its
  gradient (``SemiDiscreteOT.transport``) returns those training points, and the extended map
  (``ae_ot.ot.extension.extended_map``) interpolates between neighbouring points of one mode but
  never across the singular boundaries between modes.

A generator pushing a connected (Gaussian) latent space through a continuous network onto 8
separate modes must either drop modes or lay samples on the bridges between them; a transport
map with singular boundaries does neither. The script reports, for each generator's samples,

* modes covered: modes whose disc of radius 3 std around the centre holds at least a quarter of
  the mode's fair share (n / 8) of the samples;
* between modes: the share of samples farther than 3 std from every centre (for the data itself
  that share is exp(-9/2) ~ 1.1% in expectation).

The same models train from the command line, e.g.
``ae-ot fit --model WGANGP --model.net=mlp --model.latent_dim=2 --data Points2DDataModule``.

    python examples/plot_zoo_2d_modes.py
    python examples/plot_zoo_2d_modes.py --quick
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from ae_ot.data import Points2DDataModule  # noqa: E402
from ae_ot.generators import WGAN, WGANGP, MinibatchWassersteinGenerator, SinkhornGenerator  # noqa: E402
from ae_ot.ot import SemiDiscreteOT  # noqa: E402
from ae_ot.ot.extension import extended_map  # noqa: E402


def mode_stats(samples: torch.Tensor, centres: torch.Tensor, std: float) -> dict:
    """Per-mode counts within 3 std, modes covered (>= 1/4 of the fair share n/K within 3 std) and
    the share of samples farther than 3 std from every centre."""
    n, k = samples.shape[0], centres.shape[0]
    dist = torch.cdist(samples.double(), centres.double())
    near = dist.min(1).values <= 3 * std
    counts = torch.bincount(dist.argmin(1)[near], minlength=k)
    return {"covered": int((counts >= 0.25 * n / k).sum()), "between": float(1 - near.double().mean()),
            "counts": counts.tolist()}


def train(model: pl.LightningModule, dm: Points2DDataModule, epochs: int, seed: int) -> float:
    """Fit ``model`` for ``epochs`` passes over the points on the CPU, writing nothing; seconds."""
    pl.seed_everything(seed, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        return time.perf_counter() - t0


def semidiscrete_samples(points: torch.Tensor, n: int, seconds: float, seed: int) -> tuple[dict, float, str]:
    """Plain and extended semi-discrete OT samples from Uniform([-1, 1]^2) onto the points, the
    seconds it took and the solver's report message."""
    t0 = time.perf_counter()
    solver = SemiDiscreteOT(points, low=-1.0, high=1.0, seed=seed)
    with warnings.catch_warnings():  # a time-limited solve may end unconverged: its message is printed
        warnings.simplefilter("ignore")
        report = solver.fit(time_limit=seconds, progress=False)
    noise = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed + 7)) * 2 - 1
    plain = solver.transport(noise)
    values, indices = solver.topk(noise, 8)          # the settings of `ae-ot toy2d`
    extended = extended_map(values, indices, solver.targets, angle_threshold=math.radians(8.0), radius=0.6)
    return {"semi-discrete OT (plain map)": plain, "semi-discrete OT (extended map)": extended}, \
        time.perf_counter() - t0, report.message


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30,
                        help="passes over the 8,000 points for the Sinkhorn and minibatch-Wasserstein generators")
    parser.add_argument("--gan_epochs", type=int, default=150,
                        help="passes for WGAN and WGAN-GP (one critic step per batch, a generator step every 5)")
    parser.add_argument("--sdot_points", type=int, default=None,
                        help="targets of the semi-discrete OT: a seeded subsample (default: all the points)")
    parser.add_argument("--sdot_seconds", type=float, default=120.0,
                        help="time limit of the semi-discrete OT fit (it stops sooner once converged)")
    parser.add_argument("--num_samples", type=int, default=4000)
    parser.add_argument("--width", type=int, default=128, help="hidden units of the MLPs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/gallery")
    parser.add_argument("--quick", action="store_true", help="one epoch, 1 s of OT: seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.gan_epochs, args.sdot_points, args.sdot_seconds = 1, 1, 200, 1.0
        args.num_samples, args.width = 1000, 32
    torch.manual_seed(args.seed)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    dm = Points2DDataModule(batch_size=256, seed=args.seed)
    dm.setup()
    centres, std = dm.centres, dm.std
    if args.sdot_points is None:
        args.sdot_points = dm.num_points
    if not 1 <= args.sdot_points <= dm.num_points:
        raise ValueError(f"sdot_points must be between 1 and {dm.num_points}, got {args.sdot_points}")
    common = dict(latent_dim=2, width=args.width, net="mlp", data_dim=2, grid_every_n_epochs=0)
    models = {
        "WGAN (clipping)": WGAN(critic_width=args.width, lr=5e-4, diagnostic_every=0, **common),
        "WGAN-GP": WGANGP(critic_width=args.width, lr=1e-3, **common),
        "Sinkhorn S_eps": SinkhornGenerator(lr=1e-3, blur=0.05, scaling=0.5, backend="tensorized", **common),
        "minibatch Wasserstein": MinibatchWassersteinGenerator(lr=1e-3, m=64, k=4, **common),
    }
    samples = {"data": dm.points[torch.randperm(dm.num_points, generator=torch.Generator().manual_seed(1))
                                 [: args.num_samples]]}
    seconds = {}
    for name, model in models.items():
        epochs = args.gan_epochs if name.startswith("WGAN") else args.epochs
        seconds[name] = train(model, dm, epochs, args.seed)
        samples[name] = model.sample(args.num_samples, seed=args.seed)
    targets = dm.points[torch.randperm(dm.num_points, generator=torch.Generator().manual_seed(args.seed + 3))
                        [: args.sdot_points]]
    sdot, seconds["semi-discrete OT"], message = semidiscrete_samples(targets, args.num_samples, args.sdot_seconds,
                                                                      args.seed)
    samples.update(sdot)
    print(f"semi-discrete OT onto {args.sdot_points:,} of the points: {message}")

    print(f"{dm.source}, {dm.num_points:,} points; {args.num_samples} samples per generator; "
          f"{args.gan_epochs} epochs of {dm.num_points // dm.batch_size} batches for the GANs, "
          f"{args.epochs} for the others")
    results = {}
    for name, s in samples.items():
        stats = mode_stats(s, centres, std)
        results[name] = stats
        key = "semi-discrete OT" if name.startswith("semi-discrete") else name
        took = f"{seconds[key]:.1f} s" if key in seconds else "-"
        print(f"  {name:32s} modes covered {stats['covered']}/8, between modes {100 * stats['between']:5.1f}%, "
              f"per-mode counts {stats['counts']}, time {took}")

    fig, axes = plt.subplots(1, len(samples), figsize=(2.4 * len(samples), 2.9))
    for ax, (name, s) in zip(axes, samples.items()):
        ax.scatter(*s[:2000].T, s=1, alpha=0.5)
        ax.scatter(*centres.T, s=12, c="r", marker="x", linewidths=0.8)
        st = results[name]
        ax.set_title(f"{name.replace(' (', chr(10) + '(')}\n{st['covered']}/8 modes, "
                     f"{100 * st['between']:.1f}% between", fontsize=7)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xticks=[], yticks=[])
    fig.tight_layout()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "zoo_2d_modes.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    print(f"wrote {path}")
    return {"stats": results, "seconds": seconds, "figure": str(path)}


if __name__ == "__main__":
    main()
