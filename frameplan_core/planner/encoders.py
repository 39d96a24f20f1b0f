"""Text conditioning for the planner: (B, L, D) per-token states for the joint attention and a (B, P) pooled
vector for the timestep/guidance embedding, as FLUX expects.

- ``minilm`` (tiny): all-MiniLM-L6-v2 through ``frameplan_core.text``; pooled = mean over real tokens.
- ``clip+t5`` (flux-dev): CLIP text model pooled output + T5 encoder tokens, loaded from a local FLUX folder
  (``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``). A missing CLIP tokenizer is built from
  the shipped BPE vocabulary; a T5 tokenizer can be built offline with ``build_t5_tokenizer`` (tokenizers Unigram).

A dropped (or absent) instruction is the empty string's embedding, as in training-time modality dropout. Texts
arrive normalised (``frameplan_core.text.normalize_instruction``, applied by ``GridPlanner``) and are tokenised
once per tokenizer."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from frameplan_core.errors import ModelError


def _texts(texts: Sequence[str | None] | str | None) -> list[str]:
    """One text or a list of them, None meaning the empty (dropped) text."""
    if texts is None or isinstance(texts, str):
        texts = [texts]
    return ["" if t is None else t for t in texts]


class MiniLMConditioner(torch.nn.Module):
    """Frozen MiniLM: states (B, 77, 384) with padding zeroed, pooled = masked mean (B, 384)."""

    kind = "minilm"

    def __init__(self, max_length: int = 77):
        super().__init__()
        from frameplan_core.text import load_text_encoder

        self.text = load_text_encoder("minilm", max_length=max_length)

    @property
    def dim(self) -> int:
        return self.text.dim

    @property
    def pooled_dim(self) -> int:
        return self.text.dim

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        states, mask = self.text.encode(_texts(texts), return_mask=True)
        m = mask.to(states.device, states.dtype).unsqueeze(-1)
        pooled = (states * m).sum(1) / m.sum(1).clamp_min(1.0)
        return states, pooled

    encode = forward


class ClipT5Conditioner(torch.nn.Module):
    """FLUX.1's pair: CLIP-L pooled output (B, 768) and T5-XXL token states (B, max_length, 4096)."""

    kind = "clip+t5"

    def __init__(self, clip, t5_model: torch.nn.Module, t5_tokenizer, max_length: int = 512):
        super().__init__()
        self.clip = clip  # frameplan_core.text.TextEncoder(kind="clip")
        self.t5 = t5_model.eval().requires_grad_(False)
        self.t5_tokenizer = t5_tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int = 512, dtype: torch.dtype | None = None):
        from transformers import T5EncoderModel, T5TokenizerFast

        from frameplan_core.text import load_text_encoder

        folder = Path(folder)
        clip = load_text_encoder("clip", folder, max_length=77)
        te2, tok2 = folder / "text_encoder_2", folder / "tokenizer_2"
        if not (te2 / "config.json").is_file():
            raise ModelError(f"{te2}: no T5 text encoder (config.json missing)")
        if not tok2.is_dir() or not any(tok2.iterdir()):
            raise ModelError(f"{tok2}: no T5 tokenizer; write one with "
                             "frameplan_core.planner.encoders.build_t5_tokenizer(...).save_pretrained()")
        try:
            t5 = T5EncoderModel.from_pretrained(te2, local_files_only=True, torch_dtype=dtype)
            tok = T5TokenizerFast.from_pretrained(tok2, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot load the T5 encoder/tokenizer: {exc}") from None
        if dtype is not None:
            clip.model.to(dtype)
        return cls(clip, t5, tok, max_length)

    @property
    def dim(self) -> int:
        return int(self.t5.config.d_model)

    @property
    def pooled_dim(self) -> int:
        return int(self.clip.model.config.hidden_size)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _texts(texts)
        ids, _ = self.clip.token_ids(texts)
        pooled = self.clip.model(input_ids=ids.to(self.clip.device)).pooler_output
        tok = self.t5_tokenizer(texts, truncation=True, max_length=self.max_length, padding="max_length",
                                return_tensors="pt")
        dev = next(self.t5.parameters()).device
        states = self.t5(input_ids=tok["input_ids"].to(dev)).last_hidden_state
        return states, pooled

    encode = forward


def build_t5_tokenizer(corpus: Iterable[str], vocab_size: int = 256):
    """A T5 (sentencepiece-Unigram) tokenizer trained offline on ``corpus`` with ``tokenizers``; ids 0/1/2 are
    <pad>/</s>/<unk> as in T5. For tests and for models trained with it; real FLUX folders ship theirs."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(list(corpus), trainer)
    vocab = [(p, float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def build_conditioner(kind: str, folder: str | Path | None = None, max_length: int = 77,
                      dtype: torch.dtype | None = None) -> torch.nn.Module:
    if kind == "minilm":
        return MiniLMConditioner(max_length=max_length)
    if kind == "clip+t5":
        if folder is None:
            raise ModelError("clip+t5 text conditioning needs a FLUX folder with text_encoder/ and text_encoder_2/")
        return ClipT5Conditioner.from_folder(folder, max_length=max_length, dtype=dtype)
    raise ModelError(f"text encoder {kind!r}: expected 'minilm' or 'clip+t5'")
