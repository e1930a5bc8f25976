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
