"""probsig_jax.corpus.tokenizer: the offline Qwen2.5 tokenizer and local HF tokenizer.json files."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest

from probsig_jax.corpus import CorpusConfig, iter_documents
from probsig_jax.corpus.tokenizer import (QWEN25_SPECIAL_TOKENS, HFTokenizer, Tokenizer, hf_tokenizer, load_tokenizer,
                                   qwen2_tokenizer)
from probsig_jax.validation import ConfigError

ROUND_TRIP_TEXTS = [
    "", "Hello world", "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\n\n\nend\n",
    "naïve café — “quotes” ½ ∑ ∫ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "中文字符和日本語のテキスト, 한국어", "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇩🇪",
    "def f(x):\n    return x ** 2  # comment\n", "<|endoftext|> <|im_start|>user", "\u00a0nbsp\u2003em space\u200bzw",
    "1234567890 3.14159 -42", "it's they're I'LL we've", "\x00\x01 control \x7f chars",
]


@pytest.fixture(scope="module")
def qwen():
    return qwen2_tokenizer()


def test_known_ids(qwen):
    for digit in range(10):
        assert qwen.encode(str(digit)) == [15 + digit]
    assert qwen.encode(" ") == [220]
    assert qwen.encode("Hello") == [9707]
    assert qwen.encode(" world") == [1879]
    assert qwen.encode("Hello world") == [9707, 1879]
    assert qwen.encode("12") == [16, 17]  # Qwen2 splits numbers into single digits


def test_vocab_and_special_tokens(qwen):
    assert isinstance(qwen, Tokenizer)
    assert qwen.name == "qwen2.5"
    assert qwen.vocab_size == 151665
    assert qwen.eos_id == 151643
    assert list(qwen.special_tokens) == list(QWEN25_SPECIAL_TOKENS)
    assert qwen.special_tokens["<|im_start|>"] == 151644
    assert qwen.special_tokens["<|im_end|>"] == 151645
    assert qwen.special_tokens["<|file_sep|>"] == 151664
    assert qwen.decode([151643, 151644]) == "<|endoftext|><|im_start|>"
    assert qwen is qwen2_tokenizer()  # cached


def test_special_token_text_is_ordinary_text(qwen):
    ids = qwen.encode("<|endoftext|>")
    assert 151643 not in ids and len(ids) > 1
    assert all(i < 151643 for i in qwen.encode("<|im_start|>system<|im_end|>"))
    assert qwen.decode(ids) == "<|endoftext|>"


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_round_trip(qwen, text):
    assert qwen.decode(qwen.encode(text)) == text


def test_nfc_normalization(qwen):
    decomposed = "cafe\u0301"  # e + combining acute
    assert qwen.encode(decomposed) == qwen.encode("caf\u00e9")
    assert qwen.decode(qwen.encode(decomposed)) == unicodedata.normalize("NFC", decomposed)


def test_encode_batch(qwen):
    expected = [qwen.encode(t) for t in ROUND_TRIP_TEXTS]
    assert qwen.encode_batch(ROUND_TRIP_TEXTS) == expected
    assert qwen.encode_batch(ROUND_TRIP_TEXTS, num_threads=3) == expected
    with pytest.raises(ConfigError, match="num_threads"):
        qwen.encode_batch(["x"], num_threads=0)


def test_encode_arrays(qwen):
    texts = ROUND_TRIP_TEXTS + ["cafe\u0301", "lone \ud800 surrogate"]
    arrays = qwen.encode_arrays(texts)
    assert all(a.dtype == np.uint32 and a.ndim == 1 for a in arrays)
    assert [a.tolist() for a in arrays] == [qwen.encode(t) for t in texts]


def test_decode_arrays_and_bad_ids(qwen):
    ids = qwen.encode("Hello world")
    assert qwen.decode(np.asarray(ids, dtype=np.uint32)) == "Hello world"
    assert qwen.decode([]) == ""
    with pytest.raises(ConfigError, match=r"ids: must be integers in \[0, 151664\], got 151665"):
        qwen.decode([1, 151665])
    with pytest.raises(ConfigError, match="ids"):
        qwen.decode([-1])


def test_token_strings(qwen):
    assert qwen.token_strings(qwen.encode("Hello world\n")) == ["Hello", " world", "\\n"]
    labels = qwen.token_strings(range(256))  # the 256 single bytes
    assert "<0xE6>" in labels and "\\t" in labels and "!" in labels
    assert qwen.token_strings([151643]) == ["<|endoftext|>"]
    byte_e6 = labels.index("<0xE6>")
    assert qwen.decode([byte_e6]) == "\ufffd"  # partial UTF-8 is replaced


def test_fingerprint_stable(qwen):
    fp = qwen.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == qwen2_tokenizer().fingerprint()


# ----------------------------------------------------------------------------------------------- HF files

def _train_byte_level_bpe(path, *, eos: bool = True):
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"] if eos else [],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world", "hello there world", "the quick brown fox", "def f(x): return x"] * 5,
                            trainer)
    tok.save(str(path))
    return path


def test_hf_tokenizer_file_and_directory(tmp_path):
    file = _train_byte_level_bpe(tmp_path / "tokenizer.json")
    for spec in (file, tmp_path, str(tmp_path)):
        tok = load_tokenizer(spec)
        assert isinstance(tok, HFTokenizer)
        assert tok.name == f"hf:{tmp_path}"
        assert tok.eos_id == 0 and tok.special_tokens == {"<|endoftext|>": 0}
        for text in ROUND_TRIP_TEXTS:
            assert tok.decode(tok.encode(text)) == text
        assert tok.eos_id not in tok.encode("<|endoftext|>")
        assert tok.encode_batch(ROUND_TRIP_TEXTS, num_threads=2) == [tok.encode(t) for t in ROUND_TRIP_TEXTS]
        assert tok.fingerprint() == hf_tokenizer(file).fingerprint()
    ids = tok.encode("hello world")
    assert "".join(tok.token_strings(ids)) == "hello world"
    assert 257 <= tok.vocab_size <= 400 and max(ids) < tok.vocab_size


def test_hf_tokenizer_eos_from_config_and_missing(tmp_path):
    _train_byte_level_bpe(tmp_path / "tokenizer.json", eos=False)
    tok = hf_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match="tokenizer: .*no end-of-text token"):
        tok.eos_id
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "d"}))
    assert hf_tokenizer(tmp_path).eos_id == hf_tokenizer(tmp_path)._tok.token_to_id("d")


def test_hf_wordlevel(tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "</s>": 1, "a": 2, "b": 3}
    tok = HF(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "w.json"))
    hf = hf_tokenizer(tmp_path / "w.json")
    assert hf.encode("a b a c") == [2, 3, 2, 0]
    assert hf.eos_id == 1
    assert hf.token_strings([2, 3]) == ["a", "b"]


def test_bad_spec(tmp_path):
    for spec in ("gpt2", str(tmp_path / "missing.json"), str(tmp_path), ""):
        with pytest.raises(ConfigError, match="tokenizer: accepted values: \"qwen2.5\""):
            load_tokenizer(spec)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------------------------- corpus

def _assert_round_trip(qwen, docs):
    for i, doc in enumerate(docs):
        assert qwen.decode(qwen.encode(doc)) == unicodedata.normalize("NFC", doc), f"document {i}"


def test_round_trip_default_corpus_sample(qwen):
    docs = list(iter_documents(CorpusConfig(max_documents=200)))
    assert len(docs) == 200
    _assert_round_trip(qwen, docs)


@pytest.mark.slow
def test_round_trip_default_corpus_full(qwen):
    docs = list(iter_documents(CorpusConfig()))
    assert len(docs) > 500
    _assert_round_trip(qwen, docs)
