"""Run directories: a complete checkpoint survives a crash at any file operation, and one process
at a time holds a run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bioxlstm import io as bio_io
from bioxlstm import run_dir
from bioxlstm.io import RunLock, RunLockedError, atomic_write
from bioxlstm.run_dir import (
    CHECKPOINT_DIR,
    OLD_DIR,
    TMP_DIR,
    complete_step,
    newest_checkpoint,
    replace_checkpoint,
    settle,
    write_manifest,
)


def _fill(step: int):
    def fill(directory: Path) -> None:
        for name, size in (("model.safetensors", 300 + step), ("training_state.json", 40)):
            atomic_write(directory / name, lambda p, n=size: p.write_bytes(bytes([step % 256]) * n))
    return fill


def _checkpoint(path: Path, step: int, complete: bool = True) -> Path:
    path.mkdir(parents=True)
    _fill(step)(path)
    if complete:
        write_manifest(path, step)
    return path


def test_a_checkpoint_is_complete_only_with_a_matching_manifest(tmp_path):
    full = _checkpoint(tmp_path / "a", 3)
    assert complete_step(full) == 3
    assert complete_step(_checkpoint(tmp_path / "b", 3, complete=False)) is None
    (full / "model.safetensors").write_bytes(b"x")  # truncated after the manifest was written
    assert complete_step(full) is None
    assert complete_step(tmp_path / "missing") is None


@pytest.mark.parametrize("present, expected", [
    ({CHECKPOINT_DIR: 4, TMP_DIR: None}, 4),          # killed while writing the new one
    ({OLD_DIR: 4, TMP_DIR: 5}, 5),                    # killed between the two renames
    ({CHECKPOINT_DIR: 5, OLD_DIR: 4}, 5),             # killed before the old one was retired
    ({TMP_DIR: 5, OLD_DIR: None}, 5),                 # the old one half deleted
    ({CHECKPOINT_DIR: None, OLD_DIR: 4}, 4),
    ({CHECKPOINT_DIR: None}, None),
])
def test_the_newest_complete_checkpoint_is_found_and_settled(tmp_path, present, expected):
    for name, step in present.items():
        _checkpoint(tmp_path / name, step or 1, complete=step is not None)
    found = newest_checkpoint(tmp_path)
    assert (found[1] if found else None) == expected
    settled = settle(tmp_path)
    assert (settled[1] if settled else None) == expected
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ([CHECKPOINT_DIR] if CHECKPOINT_DIR in present or expected else [])
    if expected:
        assert complete_step(tmp_path / CHECKPOINT_DIR) == expected


class Crash(Exception):
    pass


def _crash_after(monkeypatch, operations: int) -> list[int]:
    """Make the `operations`+1-th rename, mkdir, write or deletion raise Crash; a deletion that
    crashes leaves its directory half deleted, as a killed rm would."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] > operations:
            raise Crash

    real_rename, real_mkdir, real_replace = Path.rename, Path.mkdir, os.replace

    def rename(self, target):
        tick()
        return real_rename(self, target)

    def mkdir(self, *args, **kwargs):
        tick()
        return real_mkdir(self, *args, **kwargs)

    def replace(src, dst):
        tick()
        return real_replace(src, dst)

    def rmtree(path, ignore_errors=False):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        if files:
            files[0].unlink()
        tick()
        real_rmtree(path, ignore_errors=ignore_errors)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(bio_io.os, "replace", replace)
    monkeypatch.setattr(bio_io.shutil, "rmtree", rmtree)
    return count


@pytest.mark.parametrize("keep", [1, 3])
def test_a_crash_at_any_operation_of_a_replacement_leaves_a_complete_checkpoint(tmp_path, keep):
    """Replace step 1 by step 2 with a crash after 0, 1, 2, ... operations, until one replacement
    runs through: every time a complete checkpoint (step 1 or 2) can be resumed from."""
    crashed_at = 0
    for operations in range(200):
        run = tmp_path / f"run{operations}"
        run.mkdir()
        replace_checkpoint(run, 1, _fill(1), keep)
        with pytest.MonkeyPatch.context() as patch:
            _crash_after(patch, operations)
            try:
                replace_checkpoint(run, 2, _fill(2), keep)
            except Crash:
                crashed_at += 1
            else:
                break
        found = newest_checkpoint(run)
        assert found is not None and found[1] in (1, 2), f"nothing to resume after {operations} ops"
        assert settle(run)[1] == found[1]
        replace_checkpoint(run, 3, _fill(3), keep)  # and the run can go on saving
        assert complete_step(run / CHECKPOINT_DIR) == 3
    assert crashed_at >= 8, "the crash points should cover the whole replacement"
    assert complete_step(run / CHECKPOINT_DIR) == 2


def test_older_checkpoints_are_kept_in_history_up_to_keep(tmp_path):
    for step in range(1, 6):
        replace_checkpoint(tmp_path, step, _fill(step), keep=3)
    history = sorted(p.name for p in (tmp_path / run_dir.HISTORY_DIR).iterdir())
    assert history == ["step-00000003", "step-00000004"]
    assert complete_step(tmp_path / run_dir.HISTORY_DIR / history[0]) == 3


def test_a_second_lock_on_a_run_directory_is_refused_naming_the_holder(tmp_path):
    lock = RunLock(tmp_path)
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path)
    lock.release()
    RunLock(tmp_path).release()


def test_the_lock_dies_with_its_process(tmp_path):
    code = ("import os, sys; from bioxlstm.io import RunLock; lock = RunLock(sys.argv[1]); "
            "print('locked', flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "locked"
    RunLock(tmp_path).release()


def test_files_are_written_with_the_umask(tmp_path):
    code = ("import os, sys; os.umask(0o027); from safetensors.torch import save_file; import torch;"
            "from bioxlstm.io import atomic_write; from pathlib import Path; d = Path(sys.argv[1]);"
            "atomic_write(d / 'a.txt', lambda p: p.write_text('x'));"
            "atomic_write(d / 'b.safetensors', lambda p: save_file({'t': torch.zeros(2)}, str(p)))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.txt": 0o640, "b.safetensors": 0o640}


def test_manifest_lists_every_file_with_its_size(tmp_path):
    path = _checkpoint(tmp_path / "c", 7)
    manifest = json.loads((path / run_dir.MANIFEST).read_text())
    assert manifest == {"step": 7, "files": {"model.safetensors": 307, "training_state.json": 40}}
