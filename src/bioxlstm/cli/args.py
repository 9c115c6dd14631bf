"""Argument parsing shared by every command: one-line errors and range-checked numeric options.

Every numeric option is checked when the command line is parsed, so a bad value stops the
command before anything is read or computed, with the allowed range in a one-line message.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `bioxlstm CMD: error: ... (see --help)`."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)",
              file=sys.stderr)
        sys.exit(2)


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (either bound may be open-ended)."""
    rule = _range_text("an integer", minimum, maximum, False, False)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def number(minimum: float | None = None, maximum: float | None = None, *,
           above: bool = False, below: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the range; `above`/`below` make a bound exclusive."""
    rule = _range_text("a number", minimum, maximum, above, below)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        low_bad = minimum is not None and (value <= minimum if above else value < minimum)
        high_bad = maximum is not None and (value >= maximum if below else value > maximum)
        if not math.isfinite(value) or low_bad or high_bad:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def _range_text(kind: str, minimum: float | None, maximum: float | None, above: bool,
                below: bool) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} in {'(' if above else '['}{minimum:g}, {maximum:g}{')' if below else ']'}"
    if minimum is not None:
        return f"{kind} {'>' if above else '>='} {minimum:g}"
    if maximum is not None:
        return f"{kind} {'<' if below else '<='} {maximum:g}"
    return kind


POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
SEED = integer(0, 2**32 - 1)
FRACTION = number(0, 1, above=True, below=True)  # strictly between 0 and 1
PROBABILITY = number(0, 1)
POSITIVE_NUMBER = number(0, above=True)
NON_NEGATIVE_NUMBER = number(0)


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """--device, the same for every command that runs a model."""
    p.add_argument("--device", default=default,
                   help=f"cpu, cuda, cuda:N or auto (CUDA when present) (default {default})")


def add_seed(p: argparse.ArgumentParser, what: str = "random seed") -> None:
    p.add_argument("--seed", type=SEED, default=0, help=f"{what} (default 0)")


def add_batching(p: argparse.ArgumentParser, items: str, batch_size: int = 16,
                 chunk_tokens: int = 4096) -> None:
    """--batch-size, --chunk-tokens and --device of the commands that run a model over inputs."""
    p.add_argument("--batch-size", type=POSITIVE, default=batch_size,
                   help=f"{items} per batch (default {batch_size})")
    p.add_argument("--chunk-tokens", type=integer(2), default=chunk_tokens,
                   help="tokens run at once per sequence; longer ones go in pieces carrying the "
                        f"recurrent state (default {chunk_tokens})")
    add_device(p)
