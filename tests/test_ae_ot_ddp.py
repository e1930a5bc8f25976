"""AE-OT under torch.distributed / Lightning's DDP (CPU, gloo, 2 processes): each process encodes its
share, one sharded OT solve, every process holds the full solution, rank 0 writes one checkpoint,
and the result is the 1-process one (issue 11, "Scale out with the engine users already run").

Why a 2-process solve is not bitwise the 1-process one (measured below, and asserted with bounds):
the codes, the ``num_targets`` subsample, the normalisation and the merged targets and weights are
bitwise the same (each process encodes whole batches that one process would encode, and the
subsample is drawn from all codes in dataset order). The solver's iterates differ in the last bits:
the global target mean and the mean-0 centring of the heights are all-reduced sums of per-shard
sums (another summation order), and each rank scores its shard with its own matrix product. A
source sample at a near-tie then falls in the neighbouring cell in one run and not the other,
which changes that step's cell counts, and the stochastic Newton iteration carries the difference
on. On the CLI problem below (500 targets, d = 16, 40 steps) the heights differ by at most
~7e-3 (they span about +-1), 99% of noise points fall in the same cell, and the plain map
returns the same training code for 99% of the samples.

A time-limited sharded solve stops on every rank at the same step (the fit driver reads the
slowest rank's clock on every rank, :mod:`ae_ot.ot.fitting`).
"""

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ae_ot.generators import AEOT

if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
D = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, args, timeout: float) -> None:
    """Run ``fn(rank, *args)`` in 2 spawned processes; fail (and end them) after ``timeout`` s."""
    context = mp.start_processes(fn, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"the 2 processes did not finish within {timeout} s (a collective hangs)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def _init(rank: int, port: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    # A short timeout turns mismatched collectives into an error instead of a long hang.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))


def _codes():
    """350 codes of which 50 are copies of codes from the other half (duplicates across shards)."""
    g = torch.Generator().manual_seed(11)
    distinct = torch.randn(300, D, generator=g)
    copies = distinct[torch.randint(0, 300, (50,), generator=g)]
    return torch.cat([distinct[:150], copies, distinct[150:]])


def _images():
    return torch.rand(700, 1, 28, 28, generator=torch.Generator().manual_seed(12))


def _model(**kwargs):
    torch.manual_seed(0)                                # the same encoder weights in every process
    return AEOT(latent_dim=D, width=8, ot=dict(seed=3, **kwargs))


# ------------------------------------------------------------------------------------------------
# the collective pieces, without Lightning (one spawn for both tests: starting a process costs ~10 s)
# ------------------------------------------------------------------------------------------------
FAST_EVAL = {"eval_samples": 1 << 16}                 # the final held-out evaluation, kept cheap
TIME_LIMIT = 1.0


def _worker(rank, port, out):
    import torch.distributed as dist

    _init(rank, port)
    try:
        model = _model(num_targets=320, time_limit=None, max_steps=30)
        codes = model.encode_dataset(_images(), batch_size=128, progress=False, distributed=True)
        report = model.solve_ot(_codes(), progress=False, distributed=True, **FAST_EVAL)
        torch.save({"codes": codes, "report": report, "state": model.state_dict(),
                    "plain": model.latent_samples(4000, torch.Generator().manual_seed(1), extension="none")},
                   os.path.join(out, f"solve{rank}.pt"))

        timed = _model(time_limit=TIME_LIMIT, max_steps=100000)

        calls = []

        def slow_rank1(record):
            # Rank 1 lingers between steps (as rank 0 does when it draws a progress bar): rank 0
            # waits for it inside its next step, so the ranks' solver clocks drift apart.
            calls.append(record["step"])
            if rank == 1:
                time.sleep(0.01)

        started = time.perf_counter()
        report = timed.solve_ot(_codes(), progress=False, distributed=True, callback=slow_rank1, **FAST_EVAL)
        torch.save({"report": report, "heights": timed.sampler.heights, "seconds": time.perf_counter() - started,
                    "calls": calls},
                   os.path.join(out, f"timed{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    _spawn(_worker, (_free_port(), str(out)), timeout=150)
    return out


def _load(folder, kind):
    return [torch.load(folder / f"{kind}{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow   # two spawned processes (~35 s for the module); the kernels' sharding has a fast test
def test_sharded_encode_and_solve_match_one_process(spawned):
    ranks = _load(spawned, "solve")
    model = _model(num_targets=320, time_limit=None, max_steps=30)
    codes = model.encode_dataset(_images(), batch_size=128, progress=False)
    with pytest.warns(UserWarning, match="duplicate"):
        report = model.solve_ot(_codes(), progress=False, **FAST_EVAL)
    # every rank gathered all codes, bitwise those of one process (whole batches per rank)
    for r in ranks:
        assert torch.equal(r["codes"], codes)
    # every rank holds the same full solution ...
    for name, value in ranks[0]["state"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(ranks[1]["state"][name], value), name
    assert torch.equal(ranks[0]["plain"], ranks[1]["plain"])
    state = ranks[0]["state"]
    # ... of the same problem: same subsample, normalisation, and duplicates merged across the shards
    for name in ("targets", "weights", "shift", "scale"):
        assert torch.equal(state["sampler." + name], getattr(model.sampler, name)), name
    assert report["num_targets"] == ranks[0]["report"]["num_targets"] < report["num_codes"] == 320
    assert ranks[0]["report"]["processes"] == 2 and report["processes"] == 1
    assert ranks[0]["report"]["steps"] == report["steps"] == 30
    # ... solved to the same heights up to the rounding of sharded sums (see the module docstring)
    assert float((state["sampler.heights"] - model.sampler.heights).abs().max()) < 2e-2
    plain = model.latent_samples(4000, torch.Generator().manual_seed(1), extension="none")
    same = (ranks[0]["plain"] == plain).all(1).float().mean().item()
    assert same > 0.97, same


@pytest.mark.slow
def test_sharded_solve_with_time_limit_stops_all_ranks_at_one_step(spawned):
    ranks = _load(spawned, "timed")
    reports = [r["report"] for r in ranks]
    assert reports[0]["steps"] == reports[1]["steps"] > 5
    assert reports[0]["stop_reason"] == reports[1]["stop_reason"] == "time_limit"
    # the limit covers the (cheap) final evaluation too: the solver stops when its predicted cost
    # fits, never before half the limit
    assert TIME_LIMIT / 2 <= max(r["wall_time"] for r in reports) <= TIME_LIMIT + 0.5
    assert reports[0]["history"][-1]["step"] == reports[0]["steps"]          # the final evaluation
    # every step ran once, and both ranks stopped at the same one
    assert ranks[0]["calls"] == list(range(1, reports[0]["steps"] + 1))
    assert torch.equal(ranks[0]["heights"], ranks[1]["heights"]) and torch.isfinite(ranks[0]["heights"]).all()
    assert max(r["seconds"] for r in ranks) < 30


# ------------------------------------------------------------------------------------------------
# through the CLI: `ae-ot fit --trainer.strategy=ddp --trainer.devices=2`
# ------------------------------------------------------------------------------------------------
def _run_cli(args, cwd, timeout):
    """`python -m ae_ot ARGS` in its own process group (DDP starts rank 1 as a child of rank 0), so a
    hang ends with the whole group killed instead of an orphaned rank."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    process = subprocess.Popen([sys.executable, "-m", "ae_ot", *map(str, args)], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"`ae-ot {' '.join(map(str, args[:1]))}` did not finish within {timeout} s; output tail:\n"
                    f"{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output


def _fit_args(root, data_dir, *extra):
    return ["fit", "--config", REPO / "models" / "ae_ot.yaml", f"--data.data_dir={data_dir}",
            "--data.subset=2000", "--model.init_args.ot.num_targets=500", "--model.grid_size=16",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={root}", *extra]


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


@pytest.fixture(scope="module")
def autoencoder_ckpt(tmp_path_factory):
    """A (randomly initialised, seeded) autoencoder checkpoint of models/ae_ot.yaml's architecture."""
    path = tmp_path_factory.mktemp("ae") / "ae.ckpt"
    torch.manual_seed(0)
    torch.save({"state_dict": AEOT().state_dict()}, path)
    return path


@pytest.mark.slow
def test_ddp_fit_matches_one_process_fit(tmp_path, autoencoder_ckpt, monkeypatch):
    """Only the encode + OT stage (``--trainer.max_epochs=0`` from an autoencoder checkpoint): DDP's
    DistributedSampler gives each process other training batches and DDP averages their gradients,
    so a trained autoencoder would differ between 1 and 2 processes for reasons outside AE-OT."""
    from ae_ot.cli import main

    stage = ["--trainer.max_epochs=0", f"--model.autoencoder_ckpt={autoencoder_ckpt}",
             '--model.init_args.ot={"time_limit": null, "max_steps": 40}']
    data_dir = tmp_path / "data"                        # read-only use; nothing may land in the repo
    started = time.perf_counter()
    _run_cli(_fit_args(tmp_path / "ddp", data_dir, *stage, "--trainer.strategy=ddp", "--trainer.devices=2"),
             cwd=tmp_path, timeout=240)
    ddp_seconds = time.perf_counter() - started
    monkeypatch.setattr(sys, "argv", ["ae-ot"])           # LightningCLI reads args=, not pytest's argv
    main([str(a) for a in _fit_args(tmp_path / "one", data_dir, *stage, "--trainer.devices=1")])  # 1 process

    ddp_ckpts, one_ckpts = _checkpoints(tmp_path / "ddp"), _checkpoints(tmp_path / "one")
    assert len(ddp_ckpts) == 1 and len(one_ckpts) == 1, (ddp_ckpts, one_ckpts)       # one set, by rank 0
    assert ddp_ckpts[0].name == one_ckpts[0].name
    assert sorted(p.name for p in (tmp_path / "ddp").rglob("*.png")) == ["samples_epoch000.png"]
    ddp = AEOT.load_from_checkpoint(ddp_ckpts[0], map_location="cpu")
    one = AEOT.load_from_checkpoint(one_ckpts[0], map_location="cpu")
    assert ddp.sampler.report["processes"] == 2 and one.sampler.report["processes"] == 1
    assert ddp.sampler.report["steps"] == one.sampler.report["steps"] == 40
    # the same 500 targets of the same 2,000 codes, bitwise
    for name in ("targets", "weights", "shift", "scale"):
        assert torch.equal(getattr(ddp.sampler, name), getattr(one.sampler, name)), name
    assert ddp.sampler.targets.shape == (500, 16)
    # the same solution up to the rounding of sharded sums (module docstring)
    assert float((ddp.sampler.heights - one.sampler.heights).abs().max()) < 2e-2
    noise = torch.rand(20000, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert (ddp.sampler.solver.assign(noise) == one.sampler.solver.assign(noise)).float().mean().item() > 0.97
    plain = [m.latent_samples(2000, torch.Generator().manual_seed(0), extension="none") for m in (ddp, one)]
    assert (plain[0] == plain[1]).all(1).float().mean().item() > 0.97
    images = [m.sample(64, seed=0) for m in (ddp, one)]
    assert images[0].shape == (64, 1, 28, 28) and torch.allclose(images[0], images[1], atol=5e-2)
    print(f"DDP fit: {ddp_seconds:.1f} s")


@pytest.mark.slow
def test_ddp_fit_with_training_and_time_limit(tmp_path):
    """The issue's command: train, then 5 s of OT, under DDP on 2 CPU processes. It used to hang
    after the solve; now it ends, with the solution in the one checkpoint rank 0 wrote."""
    _run_cli(_fit_args(tmp_path / "run", tmp_path / "data", "--trainer.max_epochs=1", "--model.init_args.ot.time_limit=5",
                       "--trainer.strategy=ddp", "--trainer.devices=2"), cwd=tmp_path, timeout=300)
    ckpts = _checkpoints(tmp_path / "run")
    assert len(ckpts) == 1, ckpts
    model = AEOT.load_from_checkpoint(ckpts[0], map_location="cpu")
    report = model.sampler.report
    assert report["processes"] == 2 and report["stop_reason"] == "time_limit" and report["wall_time"] >= 2.5
    assert model.sampler.targets.shape == (500, 16) and model.sampler.heights.shape == (500,)
    assert model.sample(16, seed=0).shape == (16, 1, 28, 28)
