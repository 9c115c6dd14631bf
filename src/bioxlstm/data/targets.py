"""What a labelled table's target columns mean: the task they pose and their values as arrays.

Tasks: `classification` (one column of class names or integers; classes sorted, numerically for
integers), `multilabel` (several 0/1 columns), `regression` (one or more numeric columns). `auto`
decides from the training values: non-numeric or at most MAX_CLASS_LEVELS integer levels in one
column -> classification, other numbers -> regression, several 0/1 columns -> multilabel. Empty
and NA values are missing targets: class id -1, or NaN in the float arrays of the other tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioxlstm.errors import BioXLSTMError

TASKS = ("auto", "classification", "multilabel", "regression")
MISSING_VALUES = {"", "na", "nan", "n/a"}  # compared in lower case
MAX_CLASS_LEVELS = 10


class TargetError(BioXLSTMError, ValueError):
    """Target values that do not fit the task (a fraction as a class, text as a number, ...)."""


@dataclass(frozen=True)
class Targets:
    """The task, its target columns and its output names: the classes of a classification, else the
    target columns; `reason` says in a few words why `auto` chose the task."""

    task: str
    columns: tuple[str, ...]
    outputs: tuple[str, ...]
    reason: str = ""

    def describe(self) -> str:
        """One line: the task and what it is read from."""
        cols = ", ".join(self.columns)
        if self.task == "classification":
            what = f"{len(self.outputs)} classes in column '{cols}'"
        else:
            what = f"{len(self.columns)} target column{'s' * (len(self.columns) > 1)} ({cols})"
        return f"task: {self.task}, {what}" + (f" ({self.reason})" if self.reason else "")


def is_missing(value: str) -> bool:
    """Whether a raw table value marks a missing target."""
    return value.strip().lower() in MISSING_VALUES


def _number(value: str) -> float | None:
    """The value as a finite number, or None (text, inf, nan)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _kind(values: list[str]) -> tuple[str, int]:
    """('text' | 'binary' | 'integer' | 'float', number of distinct values) of a column's values."""
    numbers = [_number(v) for v in values]
    distinct = len(set(values)) if None in numbers else len(set(numbers))
    if None in numbers:
        return "text", distinct
    if all(n in (0.0, 1.0) for n in numbers):
        return "binary", distinct
    return ("integer" if all(n.is_integer() for n in numbers) else "float"), distinct


def infer_targets(raw: Sequence[Sequence[str]], columns: Sequence[str], lines: Sequence[int],
                  task: str = "auto", source: str = "") -> Targets:
    """The task of the training values `raw` (rows of one string per target column, read from
    `lines` of `source`); the values of explicit tasks are checked by `target_arrays`. Raises
    TargetError for columns without values, mixed columns, or a single class."""
    if task not in TASKS:
        raise TargetError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    where = f"{source}: " if source else ""
    values = [[row[j] for row in raw if not is_missing(row[j])] for j in range(len(columns))]
    for name, column in zip(columns, values):
        if not column:
            raise TargetError(f"{where}column '{name}' holds no target values")
    kinds = [_kind(column) for column in values]
    if task == "auto":
        task, reason = _auto_task(columns, kinds, where)
    else:
        reason = ""
    if task == "classification" and len(columns) > 1:
        raise TargetError(f"{where}classification reads one target column, got {len(columns)} "
                          f"({', '.join(columns)}); several 0/1 columns are --task multilabel")
    if task == "classification":
        outputs = tuple(_sorted_classes([_class_value(row[0], columns[0], _at(source, line))
                                         for row, line in zip(raw, lines) if not is_missing(row[0])]))
        if len(outputs) < 2:
            raise TargetError(f"{where}column '{columns[0]}' holds only one class "
                              f"({outputs[0]!r}); classification needs at least two")
    else:
        outputs = tuple(columns)
    return Targets(task, tuple(columns), outputs, reason)


def _auto_task(columns: Sequence[str], kinds: list[tuple[str, int]], where: str) -> tuple[str, str]:
    """The task `auto` chooses from the columns' kinds, and why."""
    if len(columns) == 1:
        kind, levels = kinds[0]
        if kind == "text":
            return "classification", "auto: non-numeric labels"
        if kind in ("binary", "integer") and levels <= MAX_CLASS_LEVELS:
            return "classification", f"auto: {levels} integer levels"
        return "regression", ("auto: numbers with fractions" if kind == "float"
                              else f"auto: {levels} integer levels, more than {MAX_CLASS_LEVELS}")
    if all(kind == "binary" for kind, _ in kinds):
        return "multilabel", f"auto: {len(columns)} columns of 0/1"
    text = [name for name, (kind, _) in zip(columns, kinds) if kind == "text"]
    if text:
        raise TargetError(f"{where}column '{text[0]}' holds text; several target columns must all be "
                          f"0/1 (multilabel) or all numbers (regression)")
    return "regression", f"auto: {len(columns)} numeric columns"


def target_arrays(raw: Sequence[Sequence[str]], targets: Targets, lines: Sequence[int],
                  source: str = "") -> np.ndarray:
    """Class ids (N,) with -1 for missing, or floats (N, T) with NaN for missing; errors name the
    line and column of a value that does not fit the task (or an unknown class)."""
    if targets.task == "classification":
        index = {name: j for j, name in enumerate(targets.outputs)}
        out = np.full(len(raw), -1, dtype=np.int64)
        for k, (row, line) in enumerate(zip(raw, lines)):
            if is_missing(row[0]):
                continue
            value = _class_value(row[0], targets.columns[0], _at(source, line))
            if value not in index:
                raise TargetError(f"{_at(source, line)}label {value!r} is not one of the training "
                                  f"classes {list(targets.outputs)}")
            out[k] = index[value]
        return out
    out = np.full((len(raw), len(targets.columns)), np.nan)
    for k, (row, line) in enumerate(zip(raw, lines)):
        for j, (value, name) in enumerate(zip(row, targets.columns)):
            if is_missing(value):
                continue
            number = _number(value)
            if number is None or (targets.task == "multilabel" and number not in (0.0, 1.0)):
                need = "0 or 1 (multilabel)" if targets.task == "multilabel" else "a finite number"
                raise TargetError(f"{_at(source, line)}column '{name}' holds {value!r}, not {need}")
            out[k, j] = number
    return out


def _at(source: str, line: int) -> str:
    """The start of a message about one line of a file."""
    return f"{source}, line {line}: " if source else f"line {line}: "


def _class_value(label: str, column: str, where: str) -> str:
    """The label as a class name: integers (also written '1.0') in canonical form, names as given."""
    number = _number(label)
    if number is None:
        return label
    if not number.is_integer():
        raise TargetError(f"{where}column '{column}' holds {label!r}, not a class; classification "
                          f"needs integer labels or class names (numbers are --task regression)")
    return str(int(number))


def _sorted_classes(values: list[str]) -> list[str]:
    """Distinct labels, sorted numerically when all are integers, else as text."""
    distinct = set(values)
    if all(_is_int(v) for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _is_int(value: str) -> bool:
    """Whether the text is an integer."""
    try:
        int(value)
    except ValueError:
        return False
    return True
