"""The output folder of a comparison: what it holds (its spec), who writes into it (a lock), and
its JSON records read back for a resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
from pathlib import Path

from ae_ot.checks import UserInputError

__all__ = ["SPEC_FILE", "LOCK_FILE", "read_json", "compare_spec", "check_output_folder", "output_lock"]

#: what a training comparison is, written into its output folder before the first fit
SPEC_FILE = "compare_spec.json"
#: the lock file a running comparison holds in its output folder
LOCK_FILE = ".compare.lock"


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def compare_spec(args) -> dict:
    """What decides the stored results of a training comparison: the configs (file names and
    contents), the budget, the time points, the fit arguments, the samples and the seed (read from
    the attributes of ``args``, the comparison's options)."""
    return {"train_configs": [{"name": Path(c).name, "sha256": hashlib.sha256(Path(c).read_bytes()).hexdigest()}
                              for c in args.train_configs],
            "budget_minutes": float(args.budget_minutes), "num_checkpoints": int(args.num_checkpoints),
            "fit_args": shlex.split(args.fit_args), "keep_max_epochs": bool(args.keep_max_epochs),
            "num_samples": int(args.num_samples), "seed": int(args.seed)}


def check_output_folder(out: Path, spec: dict | None) -> None:
    """Refuse (UserInputError) an output folder that holds the results of a different comparison.

    ``spec`` is this comparison's :func:`compare_spec` (None for a comparison of checkpoints only,
    which trains nothing and may overwrite the table of another checkpoint comparison).
    """
    fix = f"use another --output_dir, or delete {out} to start over"
    stored = read_json(out / SPEC_FILE)
    if stored is not None:
        if spec is None:
            raise UserInputError(f"--output_dir {out} holds the results of a compare that trained "
                                 f"{[c['name'] for c in stored.get('train_configs', [])]}; this compare of checkpoints "
                                 f"only would overwrite them: {fix}")
        diffs = [f"{key}: {stored.get(key)!r} there, {value!r} now" for key, value in spec.items()
                 if stored.get(key) != value]
        if diffs:
            raise UserInputError(f"--output_dir {out} holds the results of a different compare ("
                                 + "; ".join(diffs) + f"); to continue that one, run its command again; otherwise {fix}")
    elif spec is not None and (out / "compare.json").is_file():
        previous = (read_json(out / "compare.json") or {}).get("command", "an earlier command")
        raise UserInputError(f"--output_dir {out} holds the results of another compare ({previous}); {fix}")


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on the folder ``out`` (created) while a comparison writes into it.

    The kernel releases it when the process dies, so a killed comparison never blocks the next
    one. A second holder gets UserInputError naming the first one's pid. No lock off POSIX.
    """
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:        # not POSIX: no lock
        yield
        return
    with open(out / LOCK_FILE, "a+") as handle:       # "a+": the holder's pid stays until we hold the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            raise UserInputError(f"another `ae-ot compare` (pid {handle.read().strip() or '?'}) is writing into {out} "
                                 "right now; wait for it to finish or use another --output_dir") from err
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
