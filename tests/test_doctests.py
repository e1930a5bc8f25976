"""The Examples sections of the package's docstrings run and print what they say (slow tier: about
40 s for every module; `scripts/test.sh -m slow`)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ae_ot

MODULES = sorted(info.name for info in pkgutil.walk_packages(ae_ot.__path__, "ae_ot.")
                 if not info.name.endswith("__main__"))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see above)"
