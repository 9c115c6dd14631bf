"""`bioxlstm convert`: the authors' released DNA-xLSTM, Prot-xLSTM or Chem-xLSTM weights as a
bioxlstm checkpoint."""

from __future__ import annotations

import argparse
import sys

FAMILY_CHOICES = ("dna", "prot", "chem")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert an official Bio-xLSTM checkpoint into a bioxlstm checkpoint",
        description="Read an official checkpoint without running pickled code and write a bioxlstm "
                    "checkpoint (config.json, model.safetensors, and for Chem-xLSTM tokenizer.json) "
                    "whose outputs equal the official code's. SRC: a DNA-xLSTM Lightning .ckpt (its "
                    "model_config.json beside it or in the run directory, --config, or the config "
                    "inside the file), a Prot-xLSTM checkpoint folder (config.json + "
                    "pytorch_model.bin) or a Chem-xLSTM folder (model.pt + init_arguments.json). "
                    "See docs/pretrained.md.")
    p.add_argument("src", metavar="SRC", help="official checkpoint file or folder")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the bioxlstm checkpoint")
    p.add_argument("--family", choices=FAMILY_CHOICES,
                   help="which official code wrote SRC (default: told from its files)")
    p.add_argument("--config", metavar="FILE",
                   help="the official config file, when it is not where SRC's family keeps it "
                        "(DNA-xLSTM: model_config.json)")
    p.add_argument("--in-context", action="store_true",
                   help="Chem-xLSTM only: the model was trained on '.'-joined molecules of one "
                        "domain (the in-context / ICST model), so generation ends a molecule at '.' "
                        "(default: off; its files do not record it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bioxlstm.convert import convert_official

    out = convert_official(args.src, args.out, family=args.family, config=args.config,
                           in_context=args.in_context)
    print(f"wrote the bioxlstm checkpoint {out}", file=sys.stderr)
