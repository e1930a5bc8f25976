"""Benchmark: training time of one autoencoder epoch over MNIST, default CPU config.

    .venv/bin/python scripts/bench_autoencoder.py [--epochs 3] [--config models/autoencoder.yaml]

Trains through Lightning exactly as `ae-ot fit --config models/autoencoder.yaml` does and times
each training epoch (the training batches only; validation and checkpointing excluded and
reported separately). Prints a markdown table row per epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pytorch_lightning as pl
import torch
import yaml


class EpochTimer(pl.Callback):
    def __init__(self):
        self.train_seconds, self.epoch_seconds = [], []
        self._val = 0.0
        self._val_start = None

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()
        self._val = 0.0

    def on_validation_start(self, trainer, module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:   # the sanity check runs before the first epoch
            self._val += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, module):
        total = time.perf_counter() - self._start
        self.epoch_seconds.append(total)
        self.train_seconds.append(total - self._val)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="models/autoencoder.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    config = yaml.safe_load(open(args.config))
    from ae_ot.data import MNISTDataModule
    from ae_ot.generators import Autoencoder

    pl.seed_everything(0)
    model = Autoencoder(**config["model"]["init_args"])
    dm = MNISTDataModule(**config["data"]["init_args"])
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[timer])
    trainer.fit(model, dm)
    val = trainer.validate(model, dm, verbose=False)[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    print(f"training images per epoch: {len(dm.train_set)}, batch {dm.batch_size}")
    print("| epoch | training s | epoch s (incl. validation) |")
    print("|---|---|---|")
    for k, (t, e) in enumerate(zip(timer.train_seconds, timer.epoch_seconds)):
        print(f"| {k} | {t:.2f} | {e:.2f} |")
    print(f"val/mse after {args.epochs} epochs: {val['val/mse']:.4f}")


if __name__ == "__main__":
    main()
