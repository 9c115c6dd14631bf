"""A checkpoint's README.md: what the model is (alphabet, shape, size, heads) and how it was made."""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

from bioxlstm.version import __version__

ALPHABET_TEXT = {"dna": "DNA", "protein": "proteins", "smiles": "small molecules (SMILES)"}


def model_card(config: Any, parameters: int, heads: tuple[str, ...],
               training: dict[str, Any] | None = None) -> str:
    """The model card text; rows are left out when nothing is known about them (no placeholders).

    `training` may hold step, tokens, data (a short description), valid_loss, valid_step, command.
    """
    alphabet = getattr(config, "alphabet", None) or "raw ids"
    rows = [("alphabet", f"{alphabet} ({config.vocab_size} tokens)"),
            ("shape", _shape(config)),
            ("parameters", f"{parameters:,}"),
            ("trained heads", ", ".join({"lm": "language model", "classifier": "sequence classifier"}
                                        .get(h, h) for h in heads))]
    rows += _training_rows(training or {})
    commands = (" (`score`, `embed`, `generate`, ...)" if "lm" in heads
                else " that reads a classifier (its language-model head is not trained)")
    title = "bioxlstm " + ("classifier" if "lm" not in heads else "language model")
    template = resources.files("bioxlstm.templates").joinpath("model_card.md").read_text()
    return template.format(title=title, alphabet=alphabet, version=__version__, commands=commands,
                           alphabet_text=ALPHABET_TEXT.get(alphabet, alphabet),
                           rows="\n".join(f"| {k} | {v} |" for k, v in rows))


def _shape(config: Any) -> str:
    """Width, blocks and context of an xLSTM config (other models: their config's fields)."""
    if not hasattr(config, "slstm_at"):
        return ", ".join(f"{k} {v}" for k, v in vars(config).items() if k != "vocab_size")
    kinds = (f"sLSTM at {', '.join(map(str, config.slstm_at))}, the rest mLSTM" if config.slstm_at
             else "mLSTM")
    extras = [name for name in ("bidirectional", "rc_equivariant", "rope") if getattr(config, name)]
    return (f"d_model {config.d_model}, {config.num_blocks} blocks ({kinds}), context "
            f"{config.context_length:,}" + (f", {', '.join(extras)}" if extras else ""))


def _training_rows(training: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "step" in training:
        seen = f", {training['tokens']:,} tokens" if training.get("tokens") else ""
        rows.append(("training", f"{training['step']:,} steps{seen}"))
    if training.get("data"):
        rows.append(("training data", str(training["data"])))
    if training.get("valid_loss") is not None:
        loss = training["valid_loss"]
        rows.append(("validation loss", f"{loss:.4f} nats per token (perplexity "
                                        f"{math.exp(min(loss, 50)):.3f}) at step {training['valid_step']}"))
    if training.get("command"):
        rows.append(("made by", f"`{training['command']}`"))
    return rows
