"""`bioxlstm <command>`: each command's parser lives in its own module and calls one task.

Errors a user can cause end the command with one line on standard error and exit status 2; a
training run stopped by Ctrl-C or SIGTERM saves a checkpoint and prints the command to continue.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from bioxlstm.allocator import retain_freed_memory
from bioxlstm.cli import benchmark, convert, finetune, generate, inference, misc, pretrain
from bioxlstm.cli.args import Parser
from bioxlstm.errors import BioXLSTMError
from bioxlstm.version import __version__

COMMANDS = (misc, pretrain, generate, finetune, benchmark, inference, convert)


def build_parser() -> Parser:
    """The `bioxlstm` parser with every command's subparser."""
    parser = Parser(prog="bioxlstm",
                    description="xLSTM language models for DNA, proteins and small molecules "
                                "(PyTorch, with optional C++ and Triton kernels).")
    parser.add_argument("--version", action="version", version=f"bioxlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 for a user error, 130/143 when stopped)."""
    from bioxlstm.train import TrainingInterrupted

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    try:
        args.func(args)
    except TrainingInterrupted as stop:
        again = argv if "--resume" in argv else [*argv, "--resume"]
        print(f"bioxlstm: {stop}\nbioxlstm: continue with: {shlex.join(['bioxlstm', *again])}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if stop.reason == "SIGTERM" else signal.SIGINT)
    except BioXLSTMError as err:
        print(f"bioxlstm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioxlstm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0
