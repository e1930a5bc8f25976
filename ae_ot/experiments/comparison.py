"""The run of ``ae-ot compare`` once its options are checked: trained models (resumable), then the
given checkpoints and real images, then the reports, all under a lock on the output folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ae_ot.checks import UserInputError
from ae_ot.evaluation.metrics import METRIC_NAMES
from ae_ot.experiments.checkpoints import checkpoint_rows, real_row
from ae_ot.experiments.resume import TrainEntry, grid_samples, run_model
from ae_ot.experiments.store import SPEC_FILE, check_output_folder, compare_spec, output_lock
from ae_ot.experiments.tables import markdown_table, write_reports

__all__ = ["run_comparison"]


def run_comparison(args, entries: list[TrainEntry], command: str) -> dict:
    """Compare the generators that ``args`` (the options of :func:`ae_ot.commands.compare.compare`)
    names: train ``entries`` with the budget, evaluate them and ``args.ckpt_paths``, write the
    reports into ``args.output_dir``; returns the summary written to ``compare.json``.

    An output folder of a different comparison is refused (:func:`~ae_ot.experiments.store.check_output_folder`);
    the spec of a training comparison is written before the first fit; a finished model, a
    finished fit and an evaluated point are read back instead of being run again. UserInputError
    when no generator could be evaluated (the reports are written first).
    """
    from ae_ot.evaluation import get_classifier
    from ae_ot.io import check_writable_path, write_json_atomic

    out = Path(args.output_dir)
    check_writable_path(out / "compare.md", "--output_dir")
    spec = compare_spec(args) if entries else None
    with output_lock(out):
        check_output_folder(out, spec)
        get_classifier(progress=not args.no_progress)  # before any training: a cache that cannot hold it is refused
        if spec is not None and not (out / SPEC_FILE).is_file():
            # the command is stored for the reader; check_output_folder compares the spec's keys only
            write_json_atomic(dict(spec, command=command), out / SPEC_FILE)
        try:
            trained = [run_model(entry, args) for entry in entries]
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again (same --output_dir {out}) to continue", file=sys.stderr)
            raise
        rows, named_samples = checkpoint_rows(args, {e.name for e in entries})
        rows += trained
        named_samples += [(r["name"], s) for r in trained if r.get("metrics") and (s := grid_samples(r)) is not None]
        if args.include_real and named_samples:
            rows.append(real_row(args, channels=named_samples[0][1].shape[1]))
            named_samples.append((rows[-1]["name"], rows[-1].pop("samples")))
        budget = args.budget_minutes if entries else None
        summary = {"command": command, "budget_minutes": budget,
                   "num_checkpoints": args.num_checkpoints if entries else None, "num_samples": args.num_samples,
                   "seed": args.seed, "metric_names": METRIC_NAMES, "spec": spec, "rows": rows}
        written = write_reports(out, summary, named_samples, budget)
    print(markdown_table(rows))
    print("wrote " + ", ".join(str(p) for p in written))
    if not any(r.get("metrics") for r in rows):
        raise UserInputError("no generator could be evaluated: " + "; ".join(f"{r['name']}: {r.get('error')}" for r in rows)
                             + f" (see {out / 'compare.md'})")
    return summary
