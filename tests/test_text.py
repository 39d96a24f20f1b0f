"""Text encoders and the CLIP tokenizer built from the shipped BPE vocabulary (offline)."""
import warnings

import pytest
import torch

from frameplan_core.errors import InputError, ModelError
from frameplan_core.predictor.config import TINY_CLIP_TEXT
from frameplan_core.text import (
    InstructionTruncatedWarning,
    TextCache,
    build_clip_tokenizer,
    find_clip_bpe,
    load_text_encoder,
    normalize_instruction,
    validate_instruction,
)


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer()


@pytest.mark.parametrize("text, ids", [
    ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
    ("hello world", [49406, 3306, 1002, 49407]),
    ("A Photo of a CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),  # CLIP lower-cases
])
def test_clip_tokenizer_matches_known_ids(tok, text, ids):
    assert tok(text)["input_ids"] == ids


def test_clip_tokenizer_vocab(tok):
    assert find_clip_bpe().name == "bpe_simple_vocab_16e6.txt.gz"
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.convert_tokens_to_ids("<|startoftext|>") == 49406


def test_minilm_encoder_shapes_padding_and_determinism(minilm):
    enc = minilm
    assert not enc.model.training and enc.dim == 384
    enc.train()  # frozen encoders refuse train mode (dropout would change the embeddings)
    assert not enc.model.training
    a = enc.encode(["strike the block with the hammer", ""])
    b = enc.encode(["strike the block with the hammer", ""])
    assert a.shape == (2, 77, 384) and torch.equal(a, b)
    assert a[1, 2:].abs().sum() == 0  # padding after [CLS][SEP] is zeroed
    # related instructions are closer than unrelated ones (mean over real tokens)
    def pooled(t):
        e = enc.encode([t])[0]
        return e[e.abs().sum(-1) > 0].mean(0)
    cos = torch.nn.functional.cosine_similarity
    h1, h2, o = pooled("strike the block with the hammer"), pooled("hit the block using a hammer"), pooled("hand over the bottle")
    assert cos(h1, h2, dim=0) > cos(h1, o, dim=0)


def test_long_instruction_truncated_with_warning():
    enc = load_text_encoder("clip", config=TINY_CLIP_TEXT)
    with pytest.warns(InstructionTruncatedWarning, match="has 122 tokens, more than the clip encoder's 77: truncated"):
        e = enc.encode(["move the red block " * 30])
    assert e.shape == (1, 77, TINY_CLIP_TEXT["hidden_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(["short"])  # no warning below the limit


def test_non_ascii_is_accepted_and_normalised():
    assert validate_instruction("  pose   le bloc\u0301  ") == "pose le bloć"  # NFC + collapsed whitespace
    enc = load_text_encoder("clip", config=TINY_CLIP_TEXT)
    assert enc.encode(["café ☕ 積む"]).shape[0] == 1
    ids, _ = enc.token_ids(["café"])
    assert ids[0, 0] == 49406


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 3, "stop\x00now"])
def test_bad_instructions_refused(bad):
    with pytest.raises(InputError, match="instruction"):
        validate_instruction(bad)


def test_unknown_kind_and_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="kind"):
        load_text_encoder("t5")
    with pytest.raises(ModelError, match="text_encoder"):
        load_text_encoder("clip", folder=tmp_path)


class CountingTokenizer:
    """The real tokenizer, counting the texts it tokenises (to check that an encode tokenises each text once)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, 0

    def __call__(self, texts, *args, **kwargs):
        self.texts += len(texts)
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("kind", ["clip", "minilm"])
def test_one_tokenisation_gives_what_truncation_and_padding_give(kind, minilm):
    enc = load_text_encoder("clip", config=TINY_CLIP_TEXT) if kind == "clip" else minilm
    texts = ["strike the block with the hammer", "", "move the red block " * 30, "café ☕ 積む"]
    want = enc.tokenizer(texts, truncation=True, max_length=77, padding="max_length", return_tensors="pt")
    spy = CountingTokenizer(enc.tokenizer)
    enc.tokenizer = spy
    try:
        with pytest.warns(InstructionTruncatedWarning, match="has 122 tokens"):
            states, mask = enc.encode(texts, return_mask=True)
    finally:
        enc.tokenizer = spy.tokenizer
    assert spy.texts == len(texts)  # each text tokenised once (it was twice)
    ids, mask2 = enc.token_ids(texts[:2])
    assert torch.equal(ids, want["input_ids"][:2]) and torch.equal(mask, want["attention_mask"])
    assert torch.equal(mask2, want["attention_mask"][:2]) and states.shape[:2] == (4, 77)


def test_normalisation_is_one_function():
    assert normalize_instruction("  pose   le bloc\u0301\n ") == "pose le bloć"
    assert validate_instruction("  pose   le bloc\u0301  ") == normalize_instruction("pose le bloc\u0301")
    for blank in (None, "", "  \t"):  # the planner's optional instruction: no text
        assert validate_instruction(blank, optional=True) is None
    with pytest.raises(InputError, match="expected a string or None, got int"):
        validate_instruction(3, optional=True)
    with pytest.raises(InputError, match="control"):
        validate_instruction("stop\x00now", optional=True)


def test_text_cache_encodes_each_text_alone_keeps_recent_ones_and_follows_the_model():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        x = torch.tensor([[float(len(t))] for t in texts])
        return x, -x

    cache = TextCache(encode, size=2)
    states, pooled = cache.get(["ab", "c", "ab"], tag="cpu")
    assert calls == [["ab"], ["c"]] and states.tolist() == [[2.0], [1.0], [2.0]] and pooled.tolist()[0] == [-2.0]
    cache.get(["c", "dddd"], tag="cpu")  # "ab" is now the least recently used of three: dropped
    assert len(cache) == 2 and calls[-1] == ["dddd"]
    cache.get(["ab"], tag="cpu")
    assert calls[-1] == ["ab"]
    cache.get(["ab"], tag="cuda")  # the model moved: entries dropped, encoded again
    assert calls[-1] == ["ab"] and len(calls) == 5 and len(cache) == 1
    single = TextCache(lambda texts: torch.ones(len(texts), 3))
    assert single.get(["x", "y"])[0].shape == (2, 3)
    with pytest.raises(InputError, match="no texts"):
        single.get([])


def test_truncation_is_reported_by_a_tokenizer_without_rust_encodings():
    """A pure-Python tokenizer keeps no overflow: the length is counted in a second pass, and still warned about."""
    from transformers import BatchEncoding

    enc = load_text_encoder("clip", config=TINY_CLIP_TEXT)
    real = enc.tokenizer

    class PythonTokenizer(CountingTokenizer):
        def __call__(self, texts, *args, **kwargs):
            return BatchEncoding(dict(super().__call__(texts, *args, **kwargs)))  # drops .encodings

    enc.tokenizer = PythonTokenizer(real)
    with pytest.warns(InstructionTruncatedWarning, match="has 122 tokens"):
        ids, _ = enc.token_ids(["move the red block " * 30, "short"])
    assert enc.tokenizer.texts == 4 and ids.shape == (2, 77)
