"""Fine-tuning data: train / valid / test splits of labelled files, truncation, target scaling.

A stratified (classification) or random (other tasks) seeded share of the training file is held
out to pick the best epoch; the test set is a file or, without one, a seeded split of the training
file, announced on standard error with the task that was chosen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bioxlstm.data.labelled import Columns, LabelledData, holdout_split, missing_notes, read_labelled
from bioxlstm.vocabulary import Vocabulary


def read_splits(train: str | Path, test: str | Path | None, vocabulary: Vocabulary, columns: Columns,
                task: str, valid_fraction: float, test_fraction: float, seed: int
                ) -> tuple[dict[str, LabelledData], str, list[str]]:
    """train / valid / test sets, where the test set came from (its file, or a seeded split), and
    the notes to announce once the options are known to fit (the task chosen, missing targets)."""
    train_data = read_labelled(train, vocabulary, columns, task=task)
    notes = [f"bioxlstm: {train_data.spec.describe()}", *missing_notes(train_data, str(train))]
    if test is not None:
        test_data = read_labelled(test, vocabulary, columns, spec=train_data.spec)
        test_source = str(test)
        notes += missing_notes(test_data, test_source)
    else:
        keep, held = holdout_split(train_data.labels, test_fraction, seed)
        train_data, test_data = train_data.subset(keep), train_data.subset(held)
        test_source = f"seeded {test_fraction:.0%} split of {train}"
        notes.append(f"no test file: testing on a {test_source} ({len(test_data)} records)")
    keep, held = holdout_split(train_data.labels, valid_fraction, seed + 1)
    return ({"train": train_data.subset(keep), "valid": train_data.subset(held), "test": test_data},
            test_source, notes)


def truncate(datasets: list[LabelledData], max_length: int) -> None:
    """Cut sequences to max_length tokens, with one warning that counts them."""
    cut = total = 0
    for data in datasets:
        for j, tokens in enumerate(data.tokens):
            if len(tokens) > max_length:
                data.tokens[j] = tokens[:max_length]
                cut += 1
        total += len(data)
    if cut:
        print(f"warning: {cut} of {total} sequences are longer than {max_length} bases and were "
              f"truncated (see --max-length)", file=sys.stderr)


def target_scale(data: LabelledData) -> tuple[list[float], list[float]] | None:
    """Mean and standard deviation of each regression target over its known training values (sd 1
    for a constant target), which the head is trained to predict in units of; None otherwise."""
    if data.task != "regression":
        return None
    means, sds = [], []
    for column in data.labels.T:
        known = column[~np.isnan(column)]
        means.append(float(known.mean()))
        sd = float(known.std())
        sds.append(sd if sd > 0 else 1.0)
    return means, sds
