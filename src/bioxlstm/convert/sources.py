"""Which official format a path holds, and its files: found from file names alone, nothing is read.

DNA-xLSTM: a Lightning `.ckpt` (its `model_config.json` beside it or in the run directory above
`checkpoints/`, or the config inside the file), or the run directory itself. Prot-xLSTM: a folder
with `config.json` and `pytorch_model.bin` or `model.safetensors`. Chem-xLSTM: a folder with
`model.pt` and `init_arguments.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.errors import ConversionError

FAMILIES = ("dna", "prot", "chem")
NAMES = {"dna": "DNA-xLSTM", "prot": "Prot-xLSTM", "chem": "Chem-xLSTM"}
DNA_CONFIG = "model_config.json"
PROT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CHEM_FILES = ("model.pt", "init_arguments.json")
RUN_CHECKPOINTS = ("checkpoints/test/loss.ckpt", "checkpoints/last.ckpt")


@dataclass(frozen=True)
class OfficialSource:
    """An official checkpoint: its family, weights file and config file (DNA: None = in the .ckpt)."""

    family: str
    weights: Path
    config: Path | None

    @property
    def name(self) -> str:
        return NAMES[self.family]


def find_official(path: str | Path, family: str | None = None,
                  config: str | Path | None = None) -> OfficialSource | None:
    """The official checkpoint at `path`, or None when it looks like none (a bioxlstm checkpoint,
    a Hub id, a missing path). A forced `family` never returns None."""
    path = Path(path)
    if family is None:
        family = guess_family(path)
        if family is None:
            return None
    if family not in FAMILIES:
        raise ConversionError(f"unknown family {family!r}; choose one of {FAMILIES}")
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    finders = {"dna": _dna_files, "prot": _prot_files, "chem": _chem_files}
    return finders[family](path, None if config is None else Path(config))


def guess_family(path: Path) -> str | None:
    """The family whose files `path` holds (or is), from names only; None if none fits."""
    if path.is_file():
        folder = path.parent
        if path.suffix == ".ckpt":
            return "dna"
        if path.name in CHEM_FILES:
            return "chem"
        if path.name in PROT_WEIGHTS:
            return None if _is_bioxlstm(folder) else "prot"
        return None
    if not path.is_dir():
        return None
    if any((path / name).is_file() for name in CHEM_FILES):
        return "chem"
    if _is_bioxlstm(path):
        return None
    if (path / "pytorch_model.bin").is_file() or (path / "config.json").is_file():
        return "prot"
    if (path / DNA_CONFIG).is_file() or any((path / name).is_file() for name in RUN_CHECKPOINTS):
        return "dna"
    return None


def _is_bioxlstm(folder: Path) -> bool:
    """Whether folder/config.json is a bioxlstm config (written with model_type "bioxlstm")."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == "bioxlstm"
    except (OSError, ValueError, AttributeError):
        return False


def _dna_files(path: Path, config: Path | None) -> OfficialSource:
    """The .ckpt (a run directory gives its test/loss.ckpt or last.ckpt) and model_config.json."""
    if path.is_dir():
        found = [path / name for name in RUN_CHECKPOINTS if (path / name).is_file()]
        if not found:
            raise ConversionError(f"{path}: no {' or '.join(RUN_CHECKPOINTS)} in this DNA-xLSTM run "
                                  f"directory; give the .ckpt file")
        path = found[0]
    if config is None:
        beside = [folder / DNA_CONFIG for folder in (path.parent, *list(path.parents)[1:3])]
        config = next((c for c in beside if c.is_file()), None)
    elif not config.is_file():
        raise ConversionError(f"{config}: no such config file")
    return OfficialSource("dna", path, config)


def _prot_files(path: Path, config: Path | None) -> OfficialSource:
    """The weights file (model.safetensors, else pytorch_model.bin) and config.json of a folder."""
    folder = path.parent if path.is_file() else path
    weights = path if path.is_file() else next(
        (folder / n for n in PROT_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise ConversionError(f"{folder}: no {' or '.join(PROT_WEIGHTS)} (a Prot-xLSTM checkpoint "
                              f"folder holds one of them and config.json)")
    config = config or folder / "config.json"
    if not config.is_file():
        raise ConversionError(f"{config}: no such file (the Prot-xLSTM checkpoint's config)")
    return OfficialSource("prot", weights, config)


def _chem_files(path: Path, config: Path | None) -> OfficialSource:
    """model.pt and init_arguments.json of a Chem-xLSTM folder."""
    folder = path.parent if path.is_file() else path
    weights, config = folder / CHEM_FILES[0], config or folder / CHEM_FILES[1]
    for needed in (weights, config):
        if not needed.is_file():
            raise ConversionError(f"{needed}: no such file (a Chem-xLSTM checkpoint folder holds "
                                  f"{' and '.join(CHEM_FILES)})")
    return OfficialSource("chem", weights, config)
