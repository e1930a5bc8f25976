"""Child processes of the experiments: ``ae-ot fit`` runs whose output goes to a log file, which
die with their parent (Linux), on their timeout, or on Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["fit_command", "callback_arg", "run_logged", "fit_error", "log_tail", "newest_checkpoint"]


def fit_command(config: str | Path, *args: str) -> list[str]:
    """``python -m ae_ot fit --config config *args`` with this interpreter."""
    return [sys.executable, "-m", "ae_ot", "fit", "--config", str(config), *args]


def callback_arg(class_name: str, **init_args) -> str:
    """The ``--trainer.callbacks+=`` argument that appends the :mod:`ae_ot.callbacks` callback
    ``class_name`` with ``init_args``."""
    spec = {"class_path": f"ae_ot.callbacks.{class_name}"}
    if init_args:
        spec["init_args"] = init_args
    return "--trainer.callbacks+=" + json.dumps(spec)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when its parent dies (a ``kill -9`` of the experiment must
    not leave a fit training on, beside the resumed experiment)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_logged(cmd: list[str], log_path: Path, timeout: float = math.inf, label: str = "",
               progress_every: float | None = None) -> int:
    """Run ``cmd`` with ``$ cmd`` and then its output (stdout and stderr) in ``log_path``.

    The child gets ``PYTHONUNBUFFERED=1`` and ``MPLBACKEND=Agg``, and on Linux dies with this
    process. It is killed when it runs past ``timeout`` seconds (the return code is then -9) and
    when this process is interrupted (Ctrl-C: the exception goes on). With ``progress_every``, a
    line ``label: <minutes> min`` is printed at that period. Returns the child's exit code.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        try:
            while True:
                left = timeout - (time.perf_counter() - started)
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    return -9
                wait = min(left, progress_every or left)
                try:
                    return proc.wait(timeout=None if math.isinf(wait) else wait)
                except subprocess.TimeoutExpired:
                    print(f"  {label}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _log_lines(log_path: Path) -> list[str]:
    return [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]


def fit_error(log_path: Path, returncode: int) -> str:
    """One line saying why a fit failed: its exit code and the last error line of its log."""
    lines = _log_lines(log_path)
    errors = [line for line in lines if "Error:" in line or "Exception:" in line or line.startswith("ae-ot fit: error")]
    why = errors[-1] if errors else (lines[-1] if lines else "no output")
    head = "killed after running past its timeout" if returncode == -9 else f"`ae-ot fit` exited with {returncode}"
    return f"{head}: {why} (log: {log_path})"


def log_tail(log_path: Path, count: int = 5) -> str:
    """The last ``count`` non-blank lines of a log, joined by a vertical bar between spaces."""
    return " | ".join(_log_lines(log_path)[-count:])


def newest_checkpoint(folder: Path, exclude: Path | None = None) -> Path | None:
    """The most recently written ``*.ckpt`` under ``folder``, outside ``exclude`` (None if none)."""
    ckpts = [p for p in Path(folder).rglob("*.ckpt") if exclude is None or Path(exclude) not in p.parents]
    ckpts.sort(key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None
