"""Draw the JSON written by throughput.py and generation.py as PNG charts (matplotlib, Agg)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullLocator

STYLES = {"xlstm": dict(linestyle="-", marker="o"), "transformer": dict(linestyle="--", marker="s")}
OTHER_STYLE = dict(linestyle=":", marker="^")
PHASES = (("fwd", "forward"), ("train", "forward + backward"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Plot benchmark results: tokens/s and peak memory vs sequence length (from "
        "throughput.py JSON), generation ms/token and state memory vs context, and chunked "
        "scoring memory vs length (from generation.py JSON). Models of any other kind than "
        "xlstm and transformer in the JSON (e.g. the reference xlstm library) are drawn dotted. "
        "A missing input file is skipped.")
    parser.add_argument("--throughput", nargs="+", default=[
                        "benchmarks/results/throughput.json", "benchmarks/results/throughput_32k.json"],
                        help="JSON files from throughput.py, drawn as one (e.g. the main run and "
                        "a separate long-sequence run); a model and length in a later file "
                        "replace the same in an earlier one (default: %(default)s)")
    parser.add_argument("--generation", default="benchmarks/results/generation.json",
                        help="JSON from generation.py (default: %(default)s)")
    parser.add_argument("--out", default="docs/img/", help="directory for the PNG files "
                        "(default: %(default)s)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write throughput.png and memory.png, and generation.png, for the inputs that exist."""
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    written = []
    throughput = merge([report for path in args.throughput if (report := load(path))])
    generation = load(args.generation)
    if throughput:
        written.append(save(throughput_figure(throughput, "tokens_per_s", "tokens / s"),
                            args.out, "throughput.png", args.dpi))
        written.append(save(throughput_figure(throughput, "peak_mib", "peak memory (MiB)"),
                            args.out, "memory.png", args.dpi))
    if generation:
        written.append(save(generation_figure(generation), args.out, "generation.png", args.dpi))
    if not written:
        sys.exit("nothing to plot: no input JSON found")
    for path in written:
        print(f"wrote {path}")


def load(path: str) -> dict[str, Any] | None:
    """The parsed JSON file, or None (with a note) when it does not exist."""
    if not os.path.exists(path):
        print(f"skipping {path}: not found", file=sys.stderr)
        return None
    with open(path) as f:
        return json.load(f)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Throughput reports as one: the first one's machine, every case, later files winning.

    A case is a model at a sequence length with its checkpointing and bf16 settings; reports
    from another CPU are refused, since their figures would not be comparable.
    """
    if not reports:
        return None
    machine = reports[0].get("machine", {})
    cases: dict[tuple, dict[str, Any]] = {}
    for report in reports:
        other = report.get("machine", {})
        if other.get("cpu") != machine.get("cpu") or other.get("device") != machine.get("device"):
            sys.exit(f"cannot draw results from different machines together: "
                     f"{subtitle(machine)} and {subtitle(other)}")
        for row in report["results"]:
            key = (row["model"], row["seq_len"], row.get("checkpointing"), row.get("bf16"))
            cases[key] = row
    return {"machine": machine, "results": list(cases.values())}


def save(fig: Figure, directory: str, name: str, dpi: int) -> str:
    """Render the figure to directory/name through the Agg canvas."""
    path = os.path.join(directory, name)
    FigureCanvasAgg(fig)  # attaches itself as the figure's canvas
    fig.savefig(path, dpi=dpi)
    return path


def subtitle(machine: dict[str, Any]) -> str:
    """One line describing the machine a report came from."""
    device = machine.get("gpu") or f"{machine.get('device', 'cpu')}"
    return (f"{machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores, "
            f"{machine.get('torch_threads', '?')} threads, {device}, torch {machine.get('torch')}")


def new_figure(report: dict[str, Any], title: str, panels: int) -> tuple[Figure, list[Axes]]:
    """A figure with side-by-side panels, the title and the machine as subtitle."""
    fig = Figure(figsize=(5.2 * panels, 4.4), layout="constrained")
    fig.suptitle(f"{title}\n{subtitle(report.get('machine', {}))}", fontsize=10)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def draw(ax: Axes, rows: list[dict[str, Any]], x_key: str, value: Callable[[dict], float | None],
         title: str, xlabel: str, ylabel: str, log_y: bool = True) -> None:
    """One line per model of the rows' values that exist, against x_key on a log2 axis."""
    models: dict[str, list[tuple[float, float]]] = {}
    kinds: dict[str, str] = {}
    for row in rows:
        y = value(row)
        if y is not None:
            models.setdefault(row["model"], []).append((row[x_key], y))
            kinds[row["model"]] = row.get("kind", "")
    for model, points in models.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, label=model, **STYLES.get(kinds[model], OTHER_STYLE))
    ax.set_xscale("log", base=2)
    ticks = sorted({x for points in models.values() for x, _ in points})
    if ticks:
        ax.set_xticks(ticks, [f"{x:,}" for x in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    if log_y and models:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 1)))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if models:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)


def phase_value(phase: str, key: str) -> Callable[[dict], float | None]:
    """Reads key of a throughput row's phase when that phase finished."""
    def value(row: dict[str, Any]) -> float | None:
        result = row.get(phase, {})
        return result.get(key) if result.get("status") == "ok" else None
    return value


def row_value(key: str) -> Callable[[dict], float | None]:
    """Reads key of a generation or scoring row when the case finished."""
    return lambda row: row.get(key) if row.get("status") == "ok" else None


def throughput_figure(report: dict[str, Any], key: str, ylabel: str) -> Figure:
    """Forward and forward+backward panels of key against sequence length."""
    fig, axes = new_figure(report, f"{ylabel} vs sequence length", len(PHASES))
    for ax, (phase, label) in zip(axes, PHASES):
        draw(ax, report["results"], "seq_len", phase_value(phase, key), label,
             "sequence length (tokens)", ylabel)
    return fig


def generation_figure(report: dict[str, Any]) -> Figure:
    """ms per generated token and state memory vs context, and chunked scoring peak memory."""
    fig, axes = new_figure(report, "generation after a prefill, and chunked scoring", 3)
    rows = report.get("generation", [])
    draw(axes[0], rows, "context", row_value("ms_per_token"), "time per generated token",
         "context length (tokens)", "ms / token")
    draw(axes[1], rows, "context", row_value("state_mib"), "recurrent state vs KV cache",
         "context length (tokens)", "state size after prefill (MiB)")
    draw(axes[2], report.get("scoring", []), "length", row_value("peak_mib"),
         "log_likelihood(chunk_tokens=...) peak", "sequence length (tokens)",
         "peak memory growth (MiB)", log_y=False)
    axes[2].set_ylim(0, 1.1 * axes[2].get_ylim()[1])
    return fig


if __name__ == "__main__":
    main()
