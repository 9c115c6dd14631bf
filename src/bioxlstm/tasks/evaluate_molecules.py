"""`bioxlstm evaluate-molecules`: metrics of a file of generated SMILES, as JSON, a table and a plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bioxlstm.data.smiles import parse_molecule, read_smiles
from bioxlstm.io import atomic_write, check_output_dir
from bioxlstm.molecule_metrics import molecule_metrics, plot_properties, properties, reference_statistics

METRICS_FILE = "metrics.json"
PLOT_FILE = "properties.png"
ROWS = (("samples", "samples", "{:,}"), ("valid", "valid molecules", "{:,}"),
        ("validity", "validity", "{:.4f}"),
        ("uniqueness", "uniqueness (of valid)", "{:.4f}"),
        ("novelty_train", "novelty vs train (of unique)", "{:.4f}"),
        ("novelty_reference", "novelty vs reference (of unique)", "{:.4f}"),
        ("unique_scaffolds", "unique Bemis-Murcko scaffolds", "{:,}"),
        ("internal_diversity", "internal diversity (1 - mean Tanimoto)", "{:.4f}"),
        ("fcd", "FCD to reference", "{:.3f}"), ("reference_valid", "valid reference molecules", "{:,}"))


def report(line: str) -> None:
    """A progress line on standard error (shown in log files too)."""
    print(f"bioxlstm: {line}", file=sys.stderr, flush=True)


def evaluate_molecule_file(
    generated: str | Path,
    reference: str | Path | None = None,
    train: str | Path | None = None,
    out_dir: str | Path | None = None,
    fcd_device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the SMILES in `generated` (blank lines count as invalid samples).

    With out_dir, writes metrics.json and properties.png (molecular weight, logP and QED of the
    valid generated molecules against the reference) there.
    """
    if out_dir is not None:
        check_output_dir(out_dir, "--out")
    gen = read_smiles(generated, keep_empty=True)
    ref = read_smiles(reference) if reference is not None else None
    known = read_smiles(train) if train is not None else None
    report(f"evaluating {len(gen):,} generated molecules"
           + (f" against {len(ref):,} reference molecules" if ref is not None else ""))
    result = molecule_metrics(gen, ref, known, fcd_device=fcd_device, seed=seed, note=report)
    gen_props = properties([m for s in gen if (m := parse_molecule(s)) is not None])
    ref_props = None
    if ref is not None:  # cached by molecule_metrics a moment ago
        stats = reference_statistics(ref, fcd_device)
        ref_props = {name: stats[name] for name in gen_props}
    for name, values in gen_props.items():
        result[f"mean_{name}"] = float(values.mean()) if values.size else None
        if ref_props is not None:
            result[f"reference_mean_{name}"] = float(ref_props[name].mean()) if ref_props[name].size else None
    result["files"] = {name: None if path is None else str(path) for name, path in
                       (("generated", generated), ("reference", reference), ("train", train))}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2)
        atomic_write(out / METRICS_FILE, lambda p: p.write_text(text))
        plot_properties(gen_props, ref_props, out / PLOT_FILE)
    return result


def metrics_table(result: dict[str, Any]) -> str:
    """The headline metrics as an aligned two-column text table."""
    lines = []
    for key, label, fmt in ROWS:
        if key in result:
            value = result[key]
            lines.append(f"{label:<42}{'n/a' if value is None else fmt.format(value):>12}")
    return "\n".join(lines)
