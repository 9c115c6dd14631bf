"""Converting the Bio-xLSTM authors' released checkpoints (DNA-xLSTM, Prot-xLSTM, Chem-xLSTM) into
bioxlstm checkpoints that compute what the official code computes (docs/pretrained.md)."""

from bioxlstm.convert.official import (
    build_model,
    convert_official,
    convert_source,
    load_official,
    official_source,
    official_tokenizer,
    read_if_official,
)
from bioxlstm.convert.result import Converted
from bioxlstm.convert.sources import FAMILIES, OfficialSource, find_official
from bioxlstm.model import CHECKPOINT_READERS

if read_if_official not in CHECKPOINT_READERS:  # from_pretrained takes the official files too
    CHECKPOINT_READERS.append(read_if_official)

__all__ = ["FAMILIES", "Converted", "OfficialSource", "build_model", "convert_official",
           "convert_source", "find_official", "load_official", "official_source", "official_tokenizer"]
