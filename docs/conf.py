"""Sphinx configuration of ae-ot's API reference (``scripts/docs.sh`` builds it into docs/_build)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "ae-ot"
author = "the ae-ot developers"
copyright = "2026, the ae-ot developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",   # numpydoc-style docstrings (Parameters / Returns sections)
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False   # Lightning's own hook docstrings are not ours to lint
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True   # "Attributes" sections as fields, not second descriptions of properties
# The reference documents the package; the Markdown pages (README, benchmarks, gallery) are read on
# the repository site and are not part of the Sphinx build.
exclude_patterns = ["_build", "img", "*.md"]
nitpicky = False
html_theme = "alabaster"
html_static_path = []
suppress_warnings = ["autosummary.import_cycle"]


def escape_bars(app, what, name, obj, options, lines):
    """The docstrings write |x| for norms and absolute values, which reStructuredText reads as a
    substitution reference: escape each bar outside ``literals`` (table rows are left alone)."""
    import re

    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("+-", "+=")) or (len(stripped) > 1 and stripped[0] == stripped[-1] == "|"
                                                 and stripped.count("|") > 2):
            continue
        parts = line.split("``")
        for j in range(0, len(parts), 2):
            parts[j] = re.sub(r"(?<!\\)\|", r"\\|", parts[j])
        lines[i] = "``".join(parts)


def setup(app):
    app.connect("autodoc-process-docstring", escape_bars)
