"""Shared fixtures. Every test runs in a temporary working directory with a temporary
``AE_OT_CACHE``, so the suite never writes into the repository or the user's home (CI checks
``git status`` afterwards), and it never depends on a warm cache: the classifiers it needs are
trained once per session. The one thing kept between sessions is the fused kernel's compiled
library (see ``KEPT_KERNELS``)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")
# Set at import, before any session fixture reads it (session fixtures run before function-scoped
# ones); subprocesses inherit it.
SESSION_ROOT = Path(tempfile.mkdtemp(prefix="ae-ot-tests-"))
os.environ["AE_OT_CACHE"] = str(SESSION_ROOT / "cache")
# The fused kernel (ae_ot.ot.fused) takes ~18 s to compile, a third of the fast tier. Its library's
# file name hashes the source, the compiler and the CPU, so a library kept from an earlier session
# is exactly the one this session would build: it is copied in at start and out at the end, in the
# system's temporary folder. A fresh machine (CI) builds it once.
KEPT_KERNELS = Path(tempfile.gettempdir()) / f"ae-ot-test-kernels-{getattr(os, 'getuid', lambda: 0)()}"


def copy_kernels(source: Path, target: Path) -> None:
    """Copy the compiled kernels of ``source`` that ``target`` lacks (atomically: two sessions may
    copy at once). An unreadable or full folder only costs the next session a build."""
    from ae_ot.io import atomic_write

    try:
        for library in source.glob("fused_topk-*.so"):
            if not (target / library.name).exists():
                atomic_write(target / library.name, lambda tmp, library=library: shutil.copyfile(library, tmp))
    except OSError:
        pass


copy_kernels(KEPT_KERNELS, SESSION_ROOT / "cache" / "kernels")


@pytest.fixture(scope="session", autouse=True)
def isolated_session():
    """Run the session in a temporary working directory (one per session: MNIST is cached per
    data folder, so a folder per test would reload it every time)."""
    work = SESSION_ROOT / "cwd"
    work.mkdir(parents=True, exist_ok=True)
    before = os.getcwd()
    os.chdir(work)
    yield work
    os.chdir(before)
    copy_kernels(SESSION_ROOT / "cache" / "kernels", KEPT_KERNELS)
    shutil.rmtree(SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def mnist():
    """The full real MNIST (60k/10k), loaded once per test session."""
    from ae_ot.data import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def real_classifier(request, mnist):
    """A good MNIST classifier: under ``-m slow`` the production one (60,000 images, 3 epochs,
    >= 99 %); otherwise one trained on 20,000 images for 2 epochs (>= 98 %, ~20 s). Only `slow`
    tests use it: each has a twin with ``quick_classifier`` in the default suite."""
    from ae_ot.evaluation.classifier import get_classifier

    markexpr = request.config.getoption("markexpr") or ""
    if "slow" in markexpr and "not slow" not in markexpr:
        return get_classifier(progress=False, splits=mnist)
    return get_classifier(progress=False, splits=mnist, subset=20000, epochs=2)


@pytest.fixture(scope="session")
def quick_classifier(mnist):
    """A classifier trained on 6,000 images for 2 epochs (~97 %), a few seconds."""
    from ae_ot.evaluation.classifier import get_classifier

    return get_classifier(progress=False, splits=mnist, subset=6000, epochs=2)


def repo_path(arg):
    """``models/x.yaml`` and other repository files named relative to the repository root, made
    absolute (the tests run in a temporary working directory)."""
    text = str(arg)
    if text.startswith(("models/", "examples/", "scripts/")) and (REPO / text).exists():
        return str(REPO / text)
    return text


def run_cli(*args, cwd=None, timeout=300):
    """Run `python -m ae_ot ARGS` in a subprocess (in ``cwd``, default the session's temporary
    working directory); returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "ae_ot", *map(repo_path, args)], cwd=cwd or os.getcwd(), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
