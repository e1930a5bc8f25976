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

Examples
--------
The options are the parser's (``ae-ot latent-compare --help``); ``main`` parses a list of them
and runs the command:

>>> from ae_ot.commands.latent_compare import build_parser, main
>>> "--ckpt_path" in build_parser().format_help()
True
>>> main(["--ckpt_path", "AEOT.ckpt", "--num_samples", "10000", "--output_dir", "latent_compare"])  # doctest: +SKIP
"""


from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ae_ot.checks import UserInputError
from ae_ot.evaluation.scoring import check_sample_count
from ae_ot.experiments.latent_comparison import run_latent_comparison
from ae_ot.parsing import CommandParser, command_line, function_parser, run_function

__all__ = ["main", "latent_compare", "build_parser"]

DEFAULT_STEPS = (1, 2, 5, 10, 20, 50)


def _check_options(ckpt_path, ot_cfm_ckpt, independent_cfm_ckpt, flow_config, num_samples, num_codes, steps,
                   steps_num_samples, copy_tolerance, output_dir) -> None:
    """Every check that needs no model: raises UserInputError or FileNotFoundError naming the option
    (each checkpoint is read and must be of its kind; the output folder must take files)."""
    from ae_ot.checkpoint import check_generator_checkpoint
    from ae_ot.flow_matching import check_num_steps
    from ae_ot.generators import AEOT, LatentFlowMatching
    from ae_ot.io import check_writable_path

    check_sample_count(num_samples)
    check_sample_count(steps_num_samples, "steps_num_samples")
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
    return run_latent_comparison(ckpt_path, {"ot_cfm": ot_cfm_ckpt, "independent_cfm": independent_cfm_ckpt},
                                 flow_config=flow_config, fit_args=fit_args, num_samples=num_samples,
                                 num_codes=num_codes, steps=list(steps), steps_solver=steps_solver,
                                 steps_num_samples=steps_num_samples, copy_tolerance=copy_tolerance, seed=seed,
                                 data_dir=data_dir, output_dir=output_dir, use_umap=not no_umap,
                                 progress=not no_progress, classifier=classifier, reference=reference, command=command)


def build_parser() -> CommandParser:
    """``ae-ot latent-compare``'s options: the parameters of :func:`latent_compare` before ``*``."""
    return function_parser("ae-ot latent-compare", latent_compare, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None, classifier=None, reference=None) -> dict:
    """Run the comparison. ``classifier`` / ``reference`` override the evaluation's defaults
    (tests pass small ones)."""
    command = "ae-ot latent-compare " + shlex.join(argv if argv is not None else sys.argv[2:])
    return run_function(build_parser(), latent_compare, argv, classifier=classifier, reference=reference,
                        command=command)
