"""The results of ``ae-ot compare`` as markdown tables, and its report files (``compare.md``,
``compare.json`` and the figures of :mod:`ae_ot.experiments.plots`)."""

from __future__ import annotations

from pathlib import Path

from ae_ot.evaluation.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from ae_ot.experiments.plots import CURVE_KEYS, TABLE_KEYS, plot_bars, plot_grids, plot_quality_vs_time

__all__ = ["md_cell", "md_rows", "markdown_table", "points_table", "write_reports"]


def _fmt(key: str, metrics: dict) -> str:
    value = metrics[key]
    if key == "modes_covered":
        return f"{value}/{metrics['num_modes']}"
    if key in ("fid_classifier", "w2_minibatch_classifier"):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return f"{value:.3f}"


def md_cell(text: str, limit: int = 160) -> str:
    """``text`` made safe for one markdown table cell (no pipes, no newlines), cut at ``limit``.

    Examples
    --------
    >>> md_cell("a | b\\nc")
    'a \\\\| b c'
    """
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table: the header, its rule, then one line per row of cells.

    Examples
    --------
    >>> for line in md_rows(["model", "FID"], [["AE-OT", "9.0"]]):
    ...     print(line)
    | model | FID |
    |---|---|
    | AE-OT | 9.0 |
    """
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, *rows)]
    return [lines[0], "|" + "---|" * len(header), *lines[1:]]


def _header(keys: list[str]) -> list[str]:
    return [METRIC_NAMES[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in keys]


def markdown_table(rows: list[dict]) -> str:
    """Markdown table, one row per evaluated generator, best value of each column in bold
    (rows marked ``is_real`` take no part in "best"); a failed row says "failed" and its error."""
    contenders = [r for r in rows if r.get("metrics") and not r.get("is_real")]
    best = {}
    for key in TABLE_KEYS:
        values = [r["metrics"][key] for r in contenders]
        if values:
            best[key] = max(values) if HIGHER_IS_BETTER[key] else min(values)
    header = ["Generator", *_header(TABLE_KEYS), "train s", "samples"]
    cells = []
    for r in rows:
        if not r.get("metrics"):
            failed = "**failed**: " + md_cell(r.get("error") or "unknown error")
            cells.append([r["name"], failed] + [""] * (len(header) - 2))
            continue
        line = [r["name"]]
        for key in TABLE_KEYS:
            text = _fmt(key, r["metrics"])
            tied = len({c["metrics"][key] for c in contenders}) == 1
            if not r.get("is_real") and len(contenders) > 1 and not tied and r["metrics"][key] == best.get(key):
                text = f"**{text}**"
            line.append(text)
        line.append(f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "-")
        line.append(str(r["num_samples"]))
        cells.append(line)
    return "\n".join(md_rows(header, cells))


def points_table(rows: list[dict]) -> str:
    """Markdown table of every evaluated time point: model, seconds (training + OT stage),
    training seconds, and the metrics of the quality-against-time figure."""
    header = ["Generator", "point", "wall s (to sample)", "train s", *_header(CURVE_KEYS)]
    cells = []
    for r in rows:
        for p in r.get("points") or []:
            line = [r["name"], "final" if p["final"] else str(p["index"] + 1), f"{p['seconds']:.0f}",
                    f"{p['train_seconds']:.0f}"]
            if p.get("metrics"):
                line += [_fmt(k, p["metrics"]) for k in CURVE_KEYS]
            else:
                line += ["**failed**: " + md_cell(p.get("error", ""))] + [""] * (len(CURVE_KEYS) - 1)
            cells.append(line)
    return "\n".join(md_rows(header, cells))


def write_reports(out: Path, summary: dict, named_samples: list[tuple], budget_minutes: float | None) -> list[Path]:
    """Write ``compare.md``, ``compare.json`` and the figures of ``summary`` (the comparison's
    options and rows) into ``out``, each atomically; returns the paths written. ``grids.png`` and
    ``bars.png`` need ``named_samples``; ``quality_vs_time.png`` is drawn for trained models."""
    from ae_ot.io import atomic_write, write_json_atomic

    rows = summary["rows"]
    trained = any(r.get("points") is not None for r in rows)
    budget = f"{budget_minutes} min of training per model; " if trained else ""
    md = ["# Generator comparison\n", f"Command: `{summary['command']}`\n",
          f"{budget}{summary['num_samples']} samples per generator (seed {summary['seed']}). Features: the project's "
          "MNIST classifier (penultimate layer), not Inception; best value per column in bold.\n",
          markdown_table(rows), ""]
    md += [f"- {r['name']}: failed: {r.get('error')}" for r in rows if not r.get("metrics")]
    if trained:
        md += ["", "## Quality against time\n",
               "Seconds: the model's training wall-clock at each checkpoint, plus, for AE-OT, the encoding and OT "
               "solve that make its autoencoder of that moment a generator.\n", points_table(rows), "",
               "![quality against time](quality_vs_time.png)"]
    md += ["", "![samples](grids.png)", "", "![metrics](bars.png)", ""]
    written = [atomic_write(out / "compare.md", lambda p: p.write_text("\n".join(md))),
               write_json_atomic(summary, out / "compare.json")]
    if named_samples:
        written += [plot_grids(named_samples, out / "grids.png"), plot_bars(rows, out / "bars.png")]
    if trained:
        written.append(plot_quality_vs_time(rows, out / "quality_vs_time.png", budget_minutes))
    return written
