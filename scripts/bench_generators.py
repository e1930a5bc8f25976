"""Generator steps per second of the baseline generators at their default (CPU) configs, and
optionally a timed training run that saves sample grids along the way.

    # speed only: 60 s of training per model after 10 warm-up batches
    python scripts/bench_generators.py --seconds 60

    # continue training in 5-minute segments (cumulative generator steps in the JSON)
    python scripts/bench_generators.py --models wgan --seconds 300 --resume-dir outputs/bench_generators/ckpt

    # train each model for 10 minutes, grids every 2.5 minutes, final grid in docs/img/grid_<model>.png
    python scripts/bench_generators.py --models wgan_gp --seconds 600 --grid-every 150 --grid-dir docs/img

On a CPU shared with other jobs pass ``--threads 1``: with 2 torch threads on 2 oversubscribed
cores the OpenMP threads spin-wait for each other (measured here under load ~7: a WGAN critic step
took 0.46 CPU-s with 2 threads vs 0.05 CPU-s with 1 thread, 6x slower in wall time).

Each model is built from ``models/<name>.yaml`` by the ae-ot Lightning CLI (``run=False``) and
trained by a plain Trainer with ``max_time`` (no validation, no checkpoint). "Generator steps"
are the module's ``generator_steps`` buffer (one WGAN generator step = n_critic critic steps +
one generator update). Prints one JSON line per model (append them with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ["wgan", "wgan_gp", "sinkhorn", "minibatch_wasserstein"]


def build(name: str, overrides: list[str]):
    from ae_ot.cli import lightning_cli_class

    cli_class = lightning_cli_class()
    config = ROOT / "models" / f"{name}.yaml"
    cli = cli_class(args=["--config", str(config), *overrides], run=False,
                    trainer_defaults={"logger": False, "enable_checkpointing": False})
    return cli.model, cli.datamodule


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="config names in models/")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per model (after warm-up)")
    parser.add_argument("--warmup-batches", type=int, default=10)
    parser.add_argument("--grid-every", type=float, default=0.0, help="save a grid every this many seconds (0: off)")
    parser.add_argument("--grid-dir", default=None, help="save the final grid as <dir>/grid_<model>.png")
    parser.add_argument("--snapshot-dir", default="outputs/bench_generators", help="intermediate grids")
    parser.add_argument("--resume-dir", default=None,
                        help="continue from <dir>/<model>.ckpt when it exists and save it again at the end "
                             "(train in segments; generator steps are cumulative)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file")
    parser.add_argument("overrides", nargs="*", help="extra CLI overrides, e.g. --data.subset=5000 (after --)")
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    import torch

    from ae_ot.viz import save_image_grid

    if args.threads:
        torch.set_num_threads(args.threads)

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    class Clock(pl.Callback):
        def __init__(self, name: str):
            self.name, self.batches, self.t0, self.s0 = name, 0, None, 0
            self.last_grid = None
            self.snapshots = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.batches += 1
            now = time.perf_counter()
            if self.batches == args.warmup_batches:
                self.t0, self.s0 = now, int(module.generator_steps)
                self.cpu0 = cpu_seconds()
                self.last_grid = now
            if self.t0 is not None:
                self.t1, self.s1 = now, int(module.generator_steps)
                self.cpu1 = cpu_seconds()
                if args.grid_every and now - self.last_grid >= args.grid_every:
                    self.last_grid = now
                    elapsed = now - self.t0
                    path = Path(args.snapshot_dir) / f"grid_{self.name}_{self.s1:06d}steps.png"
                    save_image_grid(module.sample(64, seed=0), path)
                    self.snapshots.append({"minutes": round(elapsed / 60, 2), "generator_steps": self.s1,
                                           "path": str(path)})
                if now - self.t0 >= args.seconds:
                    trainer.should_stop = True

    for name in args.models:
        load = os.getloadavg()[0]
        model, datamodule = build(name, args.overrides)
        clock = Clock(name)
        trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, callbacks=[clock],
                             # without a logger the per-epoch grids go to default_root_dir/images
                             default_root_dir=str(Path(args.snapshot_dir) / "run"),
                             accelerator="auto", devices=1)
        ckpt = Path(args.resume_dir) / f"{name}.ckpt" if args.resume_dir else None
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt and ckpt.is_file() else None)
        wall = time.perf_counter() - start
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(ckpt)
        steps = clock.s1 - clock.s0
        seconds = clock.t1 - clock.t0
        record = {
            "model": name,
            "class": type(model).__name__,
            "generator_steps_per_s": round(steps / seconds, 3),
            "generator_steps": steps,
            "timed_seconds": round(seconds, 1),
            # CPU time of this process per generator step: robust to other processes sharing the
            # cores; 2 / this = the rate on 2 idle cores if both threads were kept busy
            "cpu_seconds_per_generator_step": round((clock.cpu1 - clock.cpu0) / max(steps, 1), 4),
            "total_generator_steps": clock.s1,
            "wall_seconds": round(wall, 1),
            "batch_size": datamodule.batch_size,
            "overrides": args.overrides,
            "load_avg_1min_before": round(load, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "snapshots": clock.snapshots,
        }
        if args.grid_dir:
            path = save_image_grid(model.sample(64, seed=0), Path(args.grid_dir) / f"grid_{name}.png")
            record["grid"] = str(path)
        line = json.dumps(record)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
