"""Experiments on the library: the orchestration of ``ae-ot compare`` and ``ae-ot latent-compare``.

Child-process fits with their logs and wall-clock budgets (:mod:`~ae_ot.experiments.children`,
:mod:`~ae_ot.experiments.budget`), the output folder and the resume of a half-done comparison
(:mod:`~ae_ot.experiments.store`, :mod:`~ae_ot.experiments.resume`), checkpoints scored
(:mod:`~ae_ot.experiments.checkpoints`), the latent samplers (:mod:`~ae_ot.experiments.latent`),
and the reports: markdown tables and figures (:mod:`~ae_ot.experiments.tables`,
:mod:`~ae_ot.experiments.plots`, :mod:`~ae_ot.experiments.latent_report`). The runs themselves are
:func:`~ae_ot.experiments.comparison.run_comparison` and
:func:`~ae_ot.experiments.latent_comparison.run_latent_comparison`; the commands of
:mod:`ae_ot.commands` check the options and call them. This layer sits above the generators and
the evaluation and below the commands; importing it imports no Lightning.
"""
