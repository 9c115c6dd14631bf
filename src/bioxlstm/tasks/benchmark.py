"""Run a task suite into one table: every task x seed x method, resumable cell by cell.

Methods: `xlstm` (the checkpoint fine-tuned with the chosen adaptation), `scratch` (the same
architecture freshly initialised, or a preset, trained with the same protocol) and `baseline` (the
alphabet's linear baseline on the same splits). Each finished (task, seed, method) cell is written
atomically to out/cells/TASK/METHOD-seedS.json as soon as it is done; a rerun with the same
settings skips those cells and redoes only unfinished ones, so a killed run loses at most the cell
it was in. The table (results.csv, results.md) and plot (results.png) are rebuilt from the cells;
benchmark.json records the settings cells must share, last_run.json the seeds, tasks and methods of
the latest run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioxlstm.baselines.linear import check_available, resolve_baseline
from bioxlstm.checkpoint import load_config
from bioxlstm.config import preset
from bioxlstm.data.labelled import Columns, read_labelled
from bioxlstm.errors import ConfigError
from bioxlstm.extras import require
from bioxlstm.io import RunLock, RunLockedError, atomic_write, check_output_dir, discard_tree, empty_trash
from bioxlstm.metrics import metric_names
from bioxlstm.tasks.benchmark_table import markdown, plot, summarise, write_csv
from bioxlstm.tasks.finetune import DEFAULT_SELECT, FinetuneConfig, baseline_only, finetune
from bioxlstm.tasks.finetune_report import write_json
from bioxlstm.tasks.suite import SuiteTask, as_tables, find_tasks
from bioxlstm.train_state import versions
from bioxlstm.vocabulary import Vocabulary, vocabulary_for

SETTINGS_FILE = "benchmark.json"


@dataclass
class BenchmarkConfig:
    """Seeds (seed, seed + 1, ...), the table's metric ('auto': the task's selection default), which
    tasks, whether to keep each cell's fitted model and draw the plot; `finetune` holds the training
    protocol shared by every cell (its seed is set per cell)."""

    seeds: int = 3
    seed: int = 0
    metric: str = "auto"
    tasks: tuple[str, ...] = ()
    keep_models: bool = False
    plot: bool = True
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"benchmark field 'seeds' must be a positive integer, got {self.seeds!r}")


@dataclass
class BenchmarkResult:
    """The cells run now and found done, the markdown table and the files written."""

    ran: int
    skipped: int
    table: str
    files: list[Path]


@dataclass(frozen=True)
class Method:
    """One row kind of the table: its key, its label and how a cell of it is computed."""

    key: str
    label: str


def run_benchmark(suite: str | Path, out_dir: str | Path, config: BenchmarkConfig | None = None,
                  checkpoint: str | Path | None = None, preset_name: str | None = None,
                  scratch: bool = False, columns: Columns | None = None) -> BenchmarkResult:
    """Run (or resume) every task of `suite` into out_dir; see the module doc."""
    config, columns, out_dir = config or BenchmarkConfig(), columns or Columns(), Path(out_dir)
    vocabulary = _vocabulary(checkpoint, preset_name, scratch)
    methods = _methods(config, vocabulary, checkpoint, preset_name, scratch)
    tasks = find_tasks(suite, config.tasks)
    if config.plot:
        require("matplotlib", "plot", "the benchmark plot (or --no-plot)")
    check_output_dir(out_dir, "--out")
    try:
        lock = RunLock(out_dir)
    except RunLockedError as err:
        raise RunLockedError(f"{err}".replace("--run-dir", "--out")) from None
    try:
        _check_settings(out_dir, _settings(suite, config, checkpoint, preset_name, scratch, columns))
        write_json(out_dir / "last_run.json", {"seeds": list(range(config.seed, config.seed + config.seeds)),
                                               "tasks": [t.name for t in tasks], "metric": config.metric,
                                               "methods": [m.key for m in methods], "versions": versions()})
        empty_trash(out_dir / "runs")
        tasks = [as_tables(task, out_dir / "data") for task in tasks]
        metrics = _table_metrics(tasks, vocabulary, columns, config)
        cells = [(task, seed, method) for task in tasks
                 for seed in range(config.seed, config.seed + config.seeds) for method in methods]
        done = [c for c in cells if _cell_path(out_dir, *c).is_file()]
        print(f"bioxlstm: benchmark: {len(cells)} cells ({len(tasks)} tasks x {config.seeds} seeds x "
              f"{len(methods)} methods)" + (f"; {len(done)} finished earlier, skipped" if done else ""),
              file=sys.stderr)
        todo = [c for c in cells if c not in done]
        for number, (task, seed, method) in enumerate(todo, len(done) + 1):
            record = run_cell(task, seed, method, out_dir, config, vocabulary, checkpoint, preset_name,
                              columns)
            metric = metrics[task.name]
            print(f"bioxlstm: [{number}/{len(cells)}] {task.name}, seed {seed}, {method.label}: "
                  f"{metric} {record['metrics'][metric]:.4f} ({record['seconds']:.0f} s)", file=sys.stderr)
        records = [json.loads(_cell_path(out_dir, *c).read_text()) for c in cells]
        table, files = _write_results(out_dir, records, methods, config, metrics)
    finally:
        lock.release()
    return BenchmarkResult(len(todo), len(done), table, files)


def _vocabulary(checkpoint: str | Path | None, preset_name: str | None, scratch: bool) -> Vocabulary:
    """The vocabulary every method reads the data with; refuses model options that do not fit."""
    if checkpoint is None and preset_name is None:
        raise ConfigError("benchmark needs a --checkpoint to fine-tune, a --preset to train from "
                          "scratch, or both")
    if scratch and (checkpoint is None or preset_name is not None):
        raise ConfigError("--scratch trains the --checkpoint's architecture from scratch; with "
                          "--preset the preset is the from-scratch model")
    if checkpoint is None:
        return vocabulary_for(preset(preset_name))
    config = load_config(checkpoint)
    if preset_name is not None and preset(preset_name).alphabet != config.alphabet:
        raise ConfigError(f"--preset {preset_name} is a {preset(preset_name).alphabet} model and "
                          f"{checkpoint} a {config.alphabet} model; compare models of one alphabet")
    return vocabulary_for(config, checkpoint)


def _methods(config: BenchmarkConfig, vocabulary: Vocabulary, checkpoint: str | Path | None,
             preset_name: str | None, scratch: bool) -> list[Method]:
    """The methods this run compares, in table order."""
    methods = []
    if checkpoint is not None:
        methods.append(Method("xlstm", f"xLSTM pretrained ({config.finetune.adapt})"))
    if preset_name is not None or scratch:
        methods.append(Method("scratch", "xLSTM from scratch" + (f" ({preset_name})" if preset_name else "")))
    spec = resolve_baseline(config.finetune.baseline, vocabulary, config.finetune.kmer)
    if spec is not None:
        check_available(spec)
        methods.append(Method("baseline", {"kmer": f"{spec.k}-mer", "onehot": "one-hot",
                                           "fingerprint": "fingerprint"}[spec.kind] + " linear"))
    return methods


def run_cell(task: SuiteTask, seed: int, method: Method, out_dir: Path, config: BenchmarkConfig,
             vocabulary: Vocabulary, checkpoint: str | Path | None, preset_name: str | None,
             columns: Columns) -> dict[str, Any]:
    """Compute one cell in out/runs/TASK/METHOD-seedS (redone from nothing if a killed run left
    it half-written) and record it in its cell file; returns the record."""
    run = out_dir / "runs" / task.name / f"{method.key}-seed{seed}"
    discard_tree(run)
    settings = dataclasses.replace(config.finetune, seed=seed, progress=False)
    start = time.perf_counter()
    if method.key == "baseline":
        result = baseline_only(task.train, run, vocabulary, settings, test=task.test, columns=columns)
        metrics, name, kind = result["test"], result["method"], None
    else:
        settings = dataclasses.replace(settings, baseline="none")
        if method.key == "scratch":
            settings = dataclasses.replace(settings, adapt="full", from_scratch=preset_name is None)
        use_preset = preset_name if method.key == "scratch" and preset_name is not None else None
        result = finetune(task.train, run, settings, test=task.test,
                          checkpoint=None if use_preset else checkpoint, preset_name=use_preset,
                          columns=columns)
        metrics, name, kind = result.metrics, method.label, result.task
        if not config.keep_models:
            shutil.rmtree(run / "classifier", ignore_errors=True)
    record = {"task": task.name, "seed": seed, "method": method.key, "label": method.label,
              "name": name, "task_kind": kind or json.loads((run / "metrics.json").read_text())["task"],
              "metrics": metrics, "seconds": time.perf_counter() - start}
    write_json(_cell_path(out_dir, task, seed, method), record)
    return record


def _cell_path(out_dir: Path, task: SuiteTask, seed: int, method: Method) -> Path:
    """Where a finished cell's record is (its existence is what "finished" means)."""
    return out_dir / "cells" / task.name / f"{method.key}-seed{seed}.json"


def _table_metrics(tasks: list[SuiteTask], vocabulary: Vocabulary, columns: Columns,
                   config: BenchmarkConfig) -> dict[str, str]:
    """The metric each task is tabled by: --metric, or the default of the task its training data
    poses; refused up front when a task does not report it."""
    out = {}
    for task in tasks:
        kind = read_labelled(task.train, vocabulary, columns, task=config.finetune.task).task
        names = metric_names(kind, 2)
        out[task.name] = DEFAULT_SELECT[kind] if config.metric == "auto" else config.metric
        if out[task.name] not in names:
            raise ConfigError(f"--metric {config.metric} is not reported for {kind} (task {task.name}); "
                              f"choose from {', '.join(names)}")
    return out


def _settings(suite: str | Path, config: BenchmarkConfig, checkpoint: str | Path | None,
              preset_name: str | None, scratch: bool, columns: Columns) -> dict[str, Any]:
    """What makes cells comparable: the protocol, models and columns (not seeds, tasks, metric)."""
    protocol = {k: v for k, v in dataclasses.asdict(config.finetune).items() if k not in ("seed", "progress")}
    settings = {"suite": str(Path(suite).resolve()), "checkpoint": None if checkpoint is None
                else str(Path(checkpoint).resolve()), "preset": preset_name, "scratch": scratch,
                "columns": dataclasses.asdict(columns), "finetune": protocol}
    return json.loads(json.dumps(settings))  # as it reads back from benchmark.json


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record the settings on the first run; refuse a rerun whose settings differ (naming them)."""
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())["settings"]
        flat = {**{k: v for k, v in settings.items() if k != "finetune"},
                **{f"finetune.{k}": v for k, v in settings["finetune"].items()}}
        old = {**{k: v for k, v in before.items() if k != "finetune"},
               **{f"finetune.{k}": v for k, v in before.get("finetune", {}).items()}}
        changed = sorted(k for k in set(flat) | set(old) if flat.get(k) != old.get(k))
        if changed:
            raise ConfigError(f"{out_dir} holds a benchmark run with other settings ({', '.join(changed)}); "
                              f"rerun with the same options to resume it, or choose a new --out")
        return
    text = json.dumps({"settings": settings, "versions": versions()}, indent=2, default=str)
    atomic_write(path, lambda p: p.write_text(text))


def _write_results(out_dir: Path, records: list[dict[str, Any]], methods: list[Method],
                   config: BenchmarkConfig, metric: dict[str, str]) -> tuple[str, list[Path]]:
    """results.csv (every metric), results.md and results.png (each task's table metric)."""
    summaries = summarise(records)
    labels = {m.key: m.label for m in methods}
    keys = [m.key for m in methods]
    table = markdown(summaries, metric, keys, labels)
    files = [out_dir / "results.csv", out_dir / "results.md"]
    write_csv(files[0], summaries)
    seeds = f"{config.seeds} seed{'s' * (config.seeds > 1)}"
    atomic_write(files[1], lambda p: p.write_text(f"{table}\n\n(mean ± sd over {seeds})\n"))
    if config.plot:
        files.append(out_dir / "results.png")
        plot(files[2], summaries, metric, keys, labels,
             f"{len(metric)} tasks, mean ± sd over {seeds}")
    return table, files
