"""``ae-ot umap``: where generated codes fall in the latent space, naive sampling vs AE-OT.

Encodes training images with the checkpoint's encoder, fits UMAP (2D) on those codes coloured by
digit, and overlays (a) *naive* latent samples, z ~ N(mean, cov) of the codes, and (b) AE-OT
samples (extended OT map). A second panel decodes naive samples that fall in gaps of the latent
distribution beside decoded OT samples. The gap score (:func:`ae_ot.evaluation.latent.gap_score`) of both is
printed and saved as JSON beside the figure.

    ae-ot umap --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --output umap.png

Examples
--------
The options are the parser's (``ae-ot umap --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.umap import build_parser, main
>>> "--ckpt_path" in build_parser().format_help()
True
>>> main(["--ckpt_path", "last.ckpt", "--output", "umap.png"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch

from ae_ot.checks import UserInputError
from ae_ot.evaluation.latent import gap_score, gap_threshold, nearest_neighbour_distances
from ae_ot.generators.autoencoder import gaussian_sampler, sample_gaussian
from ae_ot.io import write_json_atomic
from ae_ot.parsing import CommandParser, function_parser, run_function
from ae_ot.viz import save_figure

__all__ = ["latent_gap_report", "umap_figure", "build_parser", "main"]


def latent_gap_report(model, images: torch.Tensor, labels: torch.Tensor, num_samples: int = 2000,
                      seed: int = 0, output: str | Path | None = None, umap_neighbors: int = 15,
                      progress: bool = True) -> dict:
    """Compute both gap scores and (when ``output`` is given) draw the UMAP figure.

    Parameters
    ----------
    model : AEOT
        A model with an OT solution (``model.latent_samples``) and an encoder/decoder.
    images, labels : [n, C, 28, 28], [n]
        Training images whose codes are the reference (and the UMAP fit).
    num_samples : int
        Naive and OT codes generated each.
    """
    model = model.eval()
    codes = model.encode_dataset(images, progress=progress).cpu()
    generator = torch.Generator().manual_seed(seed)
    naive = sample_gaussian(*gaussian_sampler(codes), num_samples, generator)
    with torch.no_grad():
        ot_codes = model.latent_samples(num_samples, generator).cpu()
    threshold = gap_threshold(codes)
    result = {
        "gap_threshold": threshold,
        "gap_score_naive": gap_score(naive, codes, threshold=threshold),
        "gap_score_ot": gap_score(ot_codes, codes, threshold=threshold),
        "num_codes": int(codes.shape[0]),
        "num_samples": int(num_samples),
    }
    result["ratio_ot_to_naive"] = result["gap_score_ot"] / max(result["gap_score_naive"], 1e-12)
    if output is not None:
        _draw(model, codes, labels, naive, ot_codes, threshold, Path(output), result, umap_neighbors, seed)
        write_json_atomic(result, Path(output).with_suffix(".json"))
    return result


def _draw(model, codes, labels, naive, ot_codes, threshold, output, result, umap_neighbors, seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ae_ot.evaluation.embedding import CodeEmbedding
    from ae_ot.viz import make_grid

    embedding = CodeEmbedding(codes, n_neighbors=umap_neighbors, seed=seed)
    embedded = embedding.positions
    shown = min(1000, naive.shape[0])
    naive_2d = embedding.place(naive[:shown])
    ot_2d = embedding.place(ot_codes[:shown])

    in_gap = nearest_neighbour_distances(codes, naive) > threshold
    gap_codes = naive[in_gap][:32] if in_gap.any() else naive[:32]
    with torch.no_grad():
        decoded_gap = model.decode(gap_codes.to(model.device)).cpu()
        decoded_ot = model.decode(ot_codes[:32].to(model.device)).cpu()

    fig = plt.figure(figsize=(17, 6))
    grid_spec = fig.add_gridspec(1, 4, width_ratios=[1.25, 1.25, 0.8, 0.8])
    for k, (points, name, colour) in enumerate(((naive_2d, "naive N(mean, cov)", "k"), (ot_2d, "AE-OT", "red"))):
        ax = fig.add_subplot(grid_spec[0, k])
        sc = ax.scatter(embedded[:, 0], embedded[:, 1], c=labels.numpy(), cmap="tab10", s=1.5, alpha=0.5)
        ax.scatter(points[:, 0], points[:, 1], c=colour, s=4, marker="x", linewidths=0.6)
        score = result["gap_score_naive" if k == 0 else "gap_score_ot"]
        ax.set_title(f"UMAP of training codes + {name} samples\ngap score {100 * score:.1f}%")
        ax.set_xticks([]), ax.set_yticks([])
        if k == 0:
            handles = sc.legend_elements()[0]
            ax.legend(handles, [str(d) for d in range(10)], loc="best", fontsize=7, markerscale=0.8, ncol=2)
    for k, (images, name) in enumerate(((decoded_gap, "naive samples in gaps"), (decoded_ot, "AE-OT samples"))):
        ax = fig.add_subplot(grid_spec[0, 2 + k])
        ax.imshow(make_grid(images, nrow=6)[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"decoded: {name}")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, output, dpi=100)
    plt.close(fig)


def umap_figure(ckpt_path: str, output: str = "umap.png", num_codes: int = 10000, num_samples: int = 2000,
                seed: int = 0, data_dir: str = "data") -> dict:
    """The gap scores of naive and AE-OT latent samples of an AE-OT checkpoint, and their UMAP figure
    (module docstring); the scores also go to the .json beside the figure.

    Parameters
    ----------
    ckpt_path : str
        an AE-OT checkpoint written by `ae-ot fit`
    output : str
        figure (.png, .jpg, .pdf or .svg); the scores go to the .json beside it
    num_codes : int
        training images encoded for the reference (at least 10)
    num_samples : int
        naive and OT codes generated each (at least 1)
    seed : int
        seed of the training subset, the samples and UMAP
    data_dir : str
        where MNIST IDX files are looked for

    Returns
    -------
    dict
        The scores of :func:`latent_gap_report`.
    """
    if num_codes < 10 or num_samples < 1:
        raise UserInputError("num_codes must be >= 10 and num_samples >= 1")
    output = Path(output)
    if output.suffix.lower() not in (".png", ".jpg", ".pdf", ".svg"):
        raise UserInputError(f"unknown figure suffix {output.suffix!r}: use .png, .jpg, .pdf or .svg")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the folder of the output {output} does not exist: create it first")
    from ae_ot.io import check_writable_path

    check_writable_path(output, "--output")  # the figure and its .json, before the encoding and UMAP
    check_writable_path(output.with_suffix(".json"), "the scores file of --output")

    from ae_ot.checkpoint import load_generator
    from ae_ot.datasets import load_mnist

    model = load_generator(ckpt_path)
    if not hasattr(model, "latent_samples"):
        raise UserInputError(f"{ckpt_path} holds a {type(model).__name__}; `ae-ot umap` needs an AE-OT checkpoint")
    if not model.has_ot_solution:   # before encoding the training set
        raise UserInputError(f"{ckpt_path} holds an AE-OT model without an OT solution; solve it first with `ae-ot fit "
                             f"--config models/ae_ot.yaml --model.init_args.autoencoder_ckpt={ckpt_path} "
                             "--trainer.max_epochs=0`")
    splits = load_mnist(data_dir)
    keep = torch.randperm(splits.train_images.shape[0], generator=torch.Generator().manual_seed(seed))
    keep = keep[:num_codes]
    result = latent_gap_report(model, splits.train_images[keep], splits.train_labels[keep], num_samples, seed, output)
    print(f"gap score: naive {100 * result['gap_score_naive']:.2f}%  AE-OT {100 * result['gap_score_ot']:.2f}%  "
          f"(ratio {result['ratio_ot_to_naive']:.3f}); figure {output}, numbers {output.with_suffix('.json')}")
    return result


def build_parser() -> CommandParser:
    """``ae-ot umap``'s options: the parameters of :func:`umap_figure`."""
    return function_parser("ae-ot umap", umap_figure, description=__doc__)


def main(argv: list[str] | None = None) -> dict:
    return run_function(build_parser(), umap_figure, argv)
