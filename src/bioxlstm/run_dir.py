"""A run directory's checkpoints: written whole, then swapped in, so one complete copy always exists.

A checkpoint is a directory with `manifest.json` written last, listing every file and its size; a
directory without a valid manifest is incomplete and never resumed from. Replacing `checkpoint/`
goes: write `.checkpoint.tmp/` (manifest last), rename `checkpoint/` to `checkpoint.old/`, rename
the new one to `checkpoint/`, retire the old one. A kill at any instant leaves at least one complete
checkpoint among those three names, and `settle` picks the newest and moves it back to
`checkpoint/` before a resumed run continues.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bioxlstm.io import atomic_write, discard_tree, empty_trash, fsync_dir

CHECKPOINT_DIR = "checkpoint"
OLD_DIR = "checkpoint.old"
TMP_DIR = ".checkpoint.tmp"
HISTORY_DIR = "checkpoints"
MANIFEST = "manifest.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"


def write_manifest(directory: Path, step: int) -> None:
    """Record the step and every file's size; written last, it marks the checkpoint complete."""
    files = {str(p.relative_to(directory)): p.stat().st_size
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}
    atomic_write(directory / MANIFEST,
                 lambda p: p.write_text(json.dumps({"step": step, "files": files}, indent=1)))


def complete_step(directory: Path) -> int | None:
    """The step of a complete checkpoint directory, or None if it is missing or incomplete."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files, step = manifest["files"], manifest["step"]
        if not all((directory / name).stat().st_size == size for name, size in files.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def newest_checkpoint(run_dir: str | Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint among checkpoint/, checkpoint.old/ and .checkpoint.tmp/
    (on a tie, the first of these), with its step; None if there is none. Changes nothing."""
    best: tuple[Path, int] | None = None
    for name in (CHECKPOINT_DIR, OLD_DIR, TMP_DIR):
        path = Path(run_dir) / name
        step = complete_step(path)
        if step is not None and (best is None or step > best[1]):
            best = (path, step)
    return best


def settle(run_dir: str | Path) -> tuple[Path, int] | None:
    """Move the newest complete checkpoint to checkpoint/ and clear what crashes left behind.

    Call only while holding the run's lock. Returns (run_dir/checkpoint, step) or None.
    """
    run_dir = Path(run_dir)
    empty_trash(run_dir)
    found = newest_checkpoint(run_dir)
    final = run_dir / CHECKPOINT_DIR
    if found is not None and found[0] != final:
        discard_tree(final)
        found[0].rename(final)
        fsync_dir(run_dir)
    for name in (OLD_DIR, TMP_DIR):
        discard_tree(run_dir / name)
    return None if found is None else (final, found[1])


def replace_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], None],
                       keep: int = 1) -> Path:
    """Write a new checkpoint with fill(directory) and swap it in as run_dir/checkpoint.

    keep - 1 replaced checkpoints stay as checkpoints/step-N (the oldest go first).
    """
    tmp, final, old = run_dir / TMP_DIR, run_dir / CHECKPOINT_DIR, run_dir / OLD_DIR
    discard_tree(tmp)
    tmp.mkdir(parents=True)
    fill(tmp)
    write_manifest(tmp, step)
    fsync_dir(tmp)
    if final.exists():
        discard_tree(old)  # checkpoint/ is complete here, so the older copy is not needed
        final.rename(old)
    tmp.rename(final)
    fsync_dir(run_dir)
    _retire(run_dir, old, keep - 1)
    return final


def _retire(run_dir: Path, old: Path, keep: int) -> None:
    """Keep a replaced checkpoint as checkpoints/step-N while `keep` allows, else delete it."""
    step = complete_step(old)
    if keep > 0 and step is not None:
        history = run_dir / HISTORY_DIR
        history.mkdir(exist_ok=True)
        target = history / f"step-{step:08d}"
        discard_tree(target)
        old.rename(target)
        for stale in sorted(history.glob("step-*"))[:-keep]:
            discard_tree(stale)
        fsync_dir(history)
    discard_tree(old)


def holds_run(run_dir: str | Path) -> bool:
    """Whether run_dir has the files of a started run (a record, metrics or a checkpoint)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (RUN_FILE, METRICS_FILE, CHECKPOINT_DIR,
                                                       OLD_DIR, TMP_DIR))


def is_empty_or_missing(run_dir: str | Path) -> bool:
    """Whether run_dir does not exist or holds nothing but hidden bookkeeping (its lock)."""
    run_dir = Path(run_dir)
    return not run_dir.exists() or all(p.name.startswith(".") for p in run_dir.iterdir())
