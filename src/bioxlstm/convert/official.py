"""Converting an official checkpoint: to a model in memory, or to a bioxlstm checkpoint directory."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from bioxlstm.checkpoint import CONFIG_FILE
from bioxlstm.convert.chem import convert_chem, read_arguments, vocabulary
from bioxlstm.convert.dna import convert_dna
from bioxlstm.convert.prot import convert_prot
from bioxlstm.convert.result import Converted
from bioxlstm.convert.sources import OfficialSource, find_official
from bioxlstm.errors import ConversionError
from bioxlstm.io import check_output_dir
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.smiles import SmilesTokenizer

CONVERTERS = {"dna": convert_dna, "prot": convert_prot, "chem": convert_chem}


def official_source(src: str | Path, family: str | None = None,
                    config: str | Path | None = None) -> OfficialSource:
    """The official checkpoint at `src`; ConversionError when its format cannot be told."""
    found = find_official(src, family, config)
    if found is None:
        what = "no such file or directory" if not Path(src).exists() else (
            "not an official DNA-xLSTM, Prot-xLSTM or Chem-xLSTM checkpoint (give --family)")
        raise ConversionError(f"{src}: {what}")
    return found


def convert_source(source: OfficialSource) -> Converted:
    """The bioxlstm config, weights (and SMILES tokenizer) of an official checkpoint."""
    return CONVERTERS[source.family](source)


def build_model(converted: Converted, map_location: str | torch.device = "cpu") -> XLSTMLanguageModel:
    """The model of a conversion, its parameters being the converted tensors (no random init)."""
    with torch.device("meta"):
        model = XLSTMLanguageModel(converted.config)
    model.load_state_dict(converted.state_dict, strict=True, assign=True)
    return model.to(map_location)


def load_official(src: str | Path, family: str | None = None, config: str | Path | None = None,
                  map_location: str | torch.device = "cpu") -> XLSTMLanguageModel:
    """An official checkpoint converted in memory, saying so in one line on standard error."""
    source = official_source(src, family, config)
    print(f"bioxlstm: converting the official {source.name} checkpoint {src} in memory "
          f"(`bioxlstm convert {src} --out DIR` saves the result)", file=sys.stderr)
    return build_model(convert_source(source), map_location)


def read_if_official(source: str, map_location: str | torch.device) -> XLSTMLanguageModel | None:
    """from_pretrained's reader of the official formats: the converted model, or None for any
    path that is not an official checkpoint (a bioxlstm checkpoint, a Hub id)."""
    if find_official(source) is None:
        return None
    return load_official(source, map_location=map_location)


def official_tokenizer(src: str | Path) -> SmilesTokenizer | None:
    """The SMILES tokenizer of an official Chem-xLSTM checkpoint; None for any other path."""
    source = find_official(src)
    if source is None or source.family != "chem":
        return None
    return vocabulary(read_arguments(source.config), source.config)[0]


def convert_official(src: str | Path, out: str | Path, family: str | None = None,
                     config: str | Path | None = None, in_context: bool = False) -> Path:
    """Convert the official checkpoint `src` into the bioxlstm checkpoint directory `out`.

    `out` gets config.json (its `source` field records the provenance), model.safetensors, a model
    card and, for Chem-xLSTM, tokenizer.json. `family` ("dna", "prot", "chem") overrides
    detection; `config` names the DNA-xLSTM model_config.json when it is not beside the .ckpt.
    `in_context` marks a Chem-xLSTM model trained on '.'-joined molecules of one domain (the ICL
    model; its files do not say so), so generation ends a molecule at '.'.
    """
    source = official_source(src, family, config)
    if in_context and source.family != "chem":
        raise ConversionError(f"{src}: --in-context applies to Chem-xLSTM (SMILES) checkpoints "
                              f"only, not {source.name}")
    out = _check_out(Path(out), source)
    converted = convert_source(source)
    if in_context:
        converted = dataclasses.replace(
            converted, tokenizer=dataclasses.replace(converted.tokenizer, in_context=True))
    model = build_model(converted)
    model.save_pretrained(out)
    if converted.tokenizer is not None:
        converted.tokenizer.save(out)
    return out


def _check_out(out: Path, source: OfficialSource) -> Path:
    """Refuse to write over the official files or a foreign config.json."""
    check_output_dir(out, "--out")
    inputs = {p.resolve() for p in (source.weights, source.config) if p is not None}
    if any(p.parent == out.resolve() and p.name == CONFIG_FILE for p in inputs):
        raise ConversionError(f"--out {out} holds the official config.json; choose another directory")
    existing = out / CONFIG_FILE
    if existing.is_file():
        try:
            ours = json.loads(existing.read_text()).get("model_type") == "bioxlstm"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ConversionError(f"--out {out} holds a config.json that is not a bioxlstm config; "
                                  f"choose another directory")
    return out
