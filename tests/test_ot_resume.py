"""fit() checkpoints atomically and resumes after SIGKILL to the same final heights."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from ae_ot.ot import SemiDiscreteOT
    g = torch.Generator().manual_seed(0)
    y = torch.rand(120, 4, generator=g)
    ot = SemiDiscreteOT(y, seed=7)
    slow = sys.argv[2] == "slow"
    ot.fit(max_steps=60, batch_size=2048, progress=False, checkpoint_path=sys.argv[1], checkpoint_every=5,
           callback=(lambda r: time.sleep(0.05)) if slow else None)
    torch.save(ot.heights, sys.argv[1] + ".final")
""")


def _run(args, **kw):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, cwd=root, **kw)


@pytest.mark.cli
def test_sigkill_and_resume_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref.pt"
    assert _run([str(ref), "fast"]).wait(timeout=120) == 0
    ck = tmp_path / "ck.pt"
    p = _run([str(ck), "slow"])
    t0 = time.time()
    while not ck.exists():  # wait for the first checkpoint, then kill -9
        assert time.time() - t0 < 120 and p.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    mid = torch.load(ck, weights_only=False)
    step_killed = mid["fit_state"]["step"]
    assert 0 < step_killed < 60
    assert _run([str(ck), "fast"]).wait(timeout=120) == 0
    final = torch.load(str(ck) + ".final")
    assert torch.equal(final, torch.load(str(ref) + ".final"))
    end = torch.load(ck, weights_only=False)
    assert end["report"]["steps"] == 60 and end["fit_state"]["step"] == 60
    # no temporary files left behind by the atomic writes
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def _fitted_checkpoint(path, y, seed=1, **fit):
    from ae_ot.ot import SemiDiscreteOT

    ot = SemiDiscreteOT(y, seed=seed)
    ot.fit(**{"max_steps": 6, "batch_size": 256, "progress": False, "checkpoint_path": path, **fit})
    return ot


def test_resume_refuses_a_checkpoint_of_another_run_and_names_what_differs(tmp_path):
    import pytest

    from ae_ot.checks import UserInputError
    from ae_ot.ot import SemiDiscreteOT

    y = torch.rand(40, 3, generator=torch.Generator().manual_seed(0))
    ck = tmp_path / "ck1.pt"
    _fitted_checkpoint(ck, y)
    before = ck.read_bytes()
    other_weights = torch.linspace(1, 2, 40, dtype=torch.float64)
    cases = [
        (dict(targets=y + 0.01), {}, "other targets"),
        (dict(weights=other_weights / other_weights.sum()), {}, "other weights"),
        (dict(high=2.0), {}, "other box"),
        (dict(seed=2), {}, "seed=1, this solver has seed=2"),
        ({}, dict(method="aeot"), "method='default', this fit asks for method='aeot'"),
        ({}, dict(batch_size=128), "batch_size=256, this fit has batch_size=128"),
        ({}, dict(options={"eta": 2.0}), "eta=None vs 2.0"),
        ({}, dict(max_steps=3), "holds a run of 6 steps, more than max_steps=3"),
    ]
    for problem, fit, expected in cases:
        ot = SemiDiscreteOT(**{"targets": y, "seed": 1, **problem})
        with pytest.raises(UserInputError, match="delete it or pass another checkpoint_path") as err:
            ot.fit(**{"max_steps": 6, "batch_size": 256, "progress": False, "checkpoint_path": ck, **fit})
        assert expected in str(err.value) and str(ck) in str(err.value)
        assert ck.read_bytes() == before  # the checkpoint is left as it was
    # the same run resumes (and goes on to a larger budget)
    report = SemiDiscreteOT(y, seed=1).fit(max_steps=8, batch_size=256, progress=False, checkpoint_path=ck)
    assert report.steps == 8


def test_garbage_at_checkpoint_path_gives_the_same_error_as_load(tmp_path):
    import pytest

    from ae_ot.checks import UserInputError
    from ae_ot.ot import SemiDiscreteOT

    y = torch.rand(20, 2, generator=torch.Generator().manual_seed(0))
    good = tmp_path / "good.pt"
    _fitted_checkpoint(good, y)
    files = {"empty.pt": b"", "garbage.pt": b"not a checkpoint at all",
             "truncated.pt": good.read_bytes()[: len(good.read_bytes()) // 2]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    for name in [*files, "foreign.pt"]:
        path = tmp_path / name
        with pytest.raises(UserInputError) as from_load:
            SemiDiscreteOT.load(path)
        with pytest.raises(UserInputError) as from_fit:
            SemiDiscreteOT(y).fit(max_steps=2, progress=False, checkpoint_path=path)
        assert str(from_load.value).split(";")[0] == str(from_fit.value).split(";")[0], name
        assert "delete it or pass another checkpoint_path" in str(from_fit.value)


def test_a_resumed_run_compares_with_the_start_of_the_whole_run(tmp_path):
    import warnings

    import pytest

    from ae_ot.ot import ConvergenceWarning, SemiDiscreteOT

    # a huge step size: the last iterate ends worse than the start (test_ot_robustness.py)
    y = torch.rand(400, 3, generator=torch.Generator().manual_seed(0))
    fit = {"method": "default", "lr": 50.0, "batch_size": 4096, "eval_samples": 1 << 17, "progress": False,
           "max_steps": 3, "checkpoint_every": 1}

    def kill_at_step_3(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = SemiDiscreteOT(y, seed=0)
        start = whole.heights.clone()
        whole.fit(checkpoint_path=tmp_path / "whole.pt", **fit)
        with pytest.raises(KeyboardInterrupt):  # killed after the checkpoint of step 2
            SemiDiscreteOT(y, seed=0).fit(checkpoint_path=tmp_path / "part.pt", callback=kill_at_step_3, **fit)
        saved = torch.load(tmp_path / "part.pt", weights_only=False)
        assert saved["fit_state"]["step"] == 2
        resumed = SemiDiscreteOT(y, seed=0)
        resumed.fit(checkpoint_path=tmp_path / "part.pt", **fit)
    assert whole.report.final["returned"] == "the heights this fit started from"
    assert torch.equal(whole.heights, start)
    # the start of the whole run travels in the checkpoint: the resumed run returns it too
    assert torch.allclose(saved["fit_state"]["fit_start"]["heights"], whole.unit_heights, rtol=0, atol=1e-12)
    assert resumed.report.final["returned"] == "the heights this fit started from"
    assert torch.equal(resumed.heights, whole.heights)
