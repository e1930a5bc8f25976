#!/usr/bin/env python
"""Break the code on purpose and check that the test meant to guard it fails.

A test that passes whatever the code does guards nothing. Each mutation below replaces one line of
the package with a plausible bug and names the test that must catch it. The script copies the
working tree (tracked and untracked, not ignored, files) to a temporary folder, applies one
mutation at a time there, runs that one test, and reports whether it failed as it should. The
repository itself is never modified.

    python scripts/check_tests_can_fail.py            # all mutations (a few minutes on 2 cores)
    python scripts/check_tests_can_fail.py --list
    python scripts/check_tests_can_fail.py --only umap

Exit status 1 if a mutation survives (its test passed on broken code) or no longer applies (the
line it replaces has changed: update the mutation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str   #: short id (``--only`` matches it)
    bug: str    #: what the broken code does
    path: str   #: file of the package, relative to the repository root
    old: str    #: text replaced (must occur exactly once)
    new: str    #: the bug
    test: str   #: the pytest node id that must fail


MUTATIONS = [
    Mutation("aeot-no-step", "pyOMT's Adam step never moves the heights (method='aeot' does nothing)",
             "ae_ot/ot/methods/pyomt.py",
             'state["heights"] = problem.center(state["heights"] - lr * state["adam_m"]',
             'state["heights"] = problem.center(state["heights"] - 0.0 * lr * state["adam_m"]',
             "tests/test_ot_semidiscrete.py::test_aeot_reference_method_reduces_the_error"),
    Mutation("fit-stops-early", "the fit loop stops one step before max_steps",
             "ae_ot/ot/fitting.py", 'while state["step"] < max_steps:', 'while state["step"] < max_steps - 1:',
             "tests/test_ot_semidiscrete.py::test_aeot_reference_method_reduces_the_error"),
    Mutation("umap-gap-score", "the gap score counts no sample as lying in a gap",
             "ae_ot/evaluation/latent.py",
             "return (nearest_neighbour_distances(train_codes, generated) > threshold).float().mean().item()",
             "return 0.0",
             "tests/test_ae_ot.py::test_umap_command_writes_figure_and_scores"),
    Mutation("cli-swallows-bugs", "the CLI turns every exception into one line of 'bad input'",
             "ae_ot/cli.py", "USER_ERRORS: tuple[type[BaseException], ...] = (UserInputError, OSError)",
             "USER_ERRORS: tuple[type[BaseException], ...] = (Exception,)",
             "tests/test_codebase.py::test_cli_keeps_the_traceback_of_a_bug_and_gives_one_line_for_bad_input"),
    Mutation("classifier-frozen", "the evaluation classifier's optimiser never updates the weights",
             "ae_ot/evaluation/classifier.py", "optimizer = torch.optim.Adam(model.parameters(), lr=lr)",
             "optimizer = torch.optim.Adam(model.parameters(), lr=0.0)",
             "tests/test_evaluation.py::test_classifier_is_cached_and_deterministic"),
    Mutation("blow-up-no-halving", "after a blow-up the solver goes back to its best iterate but keeps the step size",
             "ae_ot/ot/methods/base.py", 'state["lr_scale"] = 0.5 * state.get("lr_scale", 1.0)',
             'state["lr_scale"] = 1.0 * state.get("lr_scale", 1.0)',
             "tests/test_ot_semidiscrete.py::test_blow_up_guard_restarts_from_the_best_iterate"),
]


def working_tree_files() -> list[str]:
    """Tracked and untracked files that git does not ignore (what a commit of the tree would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


def copy_tree(dest: Path) -> None:
    for name in working_tree_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def run_test(copy: Path, test: str, timeout: float) -> tuple[int, float, str]:
    """(exit status, seconds, last lines of output) of one pytest node in the copy."""
    env = dict(os.environ, PYTHONPATH=str(copy), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    # -o addopts=: no marker filter, so a node marked `slow` runs as well
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", test]
    proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return proc.returncode, time.perf_counter() - started, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each test on the unbroken copy first (it must pass)")
    a = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not a.only or a.only in m.name]
    if a.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name:20s} {m.path}: {m.bug}\n{'':20s} caught by {m.test}")
        return 0 if chosen else 2
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ae-ot-mutations-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        print("| mutation | bug | test | result | s |\n|---|---|---|---|---|")
        for m in chosen:
            source = copy / m.path
            original = source.read_text()
            if original.count(m.old) != 1:
                print(f"| {m.name} | {m.bug} | `{m.test}` | OUT OF DATE: the replaced text occurs "
                      f"{original.count(m.old)} times in {m.path} | - |")
                failures += 1
                continue
            if a.baseline:
                status, seconds, tail = run_test(copy, m.test, a.timeout)
                if status != 0:
                    print(f"| {m.name} | {m.bug} | `{m.test}` | the test FAILS ON UNBROKEN CODE: {tail} | {seconds:.0f} |")
                    failures += 1
                    continue
            source.write_text(original.replace(m.old, m.new))
            try:
                status, seconds, tail = run_test(copy, m.test, a.timeout)
            finally:
                source.write_text(original)
            caught = status == 1  # pytest: 1 = tests failed (2+ = usage/collection/internal error)
            if not caught:
                failures += 1
            result = "caught (the test failed)" if caught else f"NOT CAUGHT (pytest exit {status}): {tail}"
            print(f"| {m.name} | {m.bug} | `{m.test}` | {result} | {seconds:.0f} |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
