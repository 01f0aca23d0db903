"""probsig_jax.corpus: readers, CorpusConfig, the embedded stdlib corpus and token shards."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata

import numpy as np
import pytest
import zstandard

import probsig_jax.corpus.shards as shards_mod
from probsig_jax.corpus import (CorpusConfig, CorpusError, ReadStats, TokenShards, embedded, iter_documents,
                                open_shards, read_pile, read_text, tokenize_corpus)
from probsig_jax.corpus.tokenizer import load_tokenizer, qwen2_tokenizer
from probsig_jax.validation import ConfigError


@pytest.fixture(scope="module")
def qwen():
    return qwen2_tokenizer()


def _pile_line(text, name):
    return json.dumps({"text": text, "meta": {"pile_set_name": name}}).encode()


GOOD = [("alpha doc one\nwith two lines", "Wikipedia (en)"), ("beta ☃ snowman", "Github"),
        ("gamma 🙂 emoji", "Wikipedia (en)"), ("delta\tTAB", "Github")]


def _pile_bytes():
    """Lines: 1 good, 2 good, 3 invalid JSON, 4 good, 5 non-UTF-8, 6 blank, 7 missing text, 8 good."""
    lines = [_pile_line(*GOOD[0]), _pile_line(*GOOD[1]), b'{"text": "unterminated', _pile_line(*GOOD[2]),
             b'{"text": "bad \xff byte", "meta": {"pile_set_name": "Github"}}', b"   ",
             b'{"meta": {"pile_set_name": "Github"}}', _pile_line(*GOOD[3])]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def pile_zst(tmp_path):
    path = tmp_path / "00.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(_pile_bytes()))
    return path


@pytest.fixture
def pile_jsonl(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_bytes(_pile_bytes())
    return path


# ------------------------------------------------------------------------------------------------ readers

@pytest.mark.parametrize("fixture", ["pile_zst", "pile_jsonl"])
def test_pile_reader_skips_and_counts_malformed(request, fixture):
    path = request.getfixturevalue(fixture)
    stats = ReadStats()
    assert list(read_pile(path, stats=stats)) == [t for t, _ in GOOD]
    assert stats.malformed == {"invalid_json": 1, "invalid_utf8": 1, "missing_text": 1}
    assert stats.total_malformed == 3
    assert [e.split(": ")[0] for e in stats.examples] == [f"{path}:3", f"{path}:5", f"{path}:7"]
    assert stats.source_bytes == path.stat().st_size
    assert list(read_pile(path, pile_set_names=("Github",))) == [GOOD[1][0], GOOD[3][0]]
    assert list(read_pile(path, pile_set_names=("Github", "Wikipedia (en)"))) == [t for t, _ in GOOD]


@pytest.mark.parametrize("fixture", ["pile_zst", "pile_jsonl"])
def test_pile_reader_strict(request, fixture):
    path = request.getfixturevalue(fixture)
    with pytest.raises(CorpusError, match=rf"^corpus: {path}:3: invalid_json") as err:
        list(read_pile(path, strict=True))
    assert err.value.field == "corpus" and isinstance(err.value, ConfigError)
    lines = _pile_bytes().split(b"\n")
    del lines[2]  # without the invalid-JSON line, the non-UTF-8 line is now line 4
    data = b"\n".join(lines)
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if path.suffix == ".zst" else data)
    with pytest.raises(CorpusError, match=rf"{path}:4: invalid_utf8: byte 0xFF"):
        list(iter_documents(CorpusConfig(source=str(path), strict=True)))


def test_pile_folder_sorted_and_multiframe(tmp_path):
    folder = tmp_path / "pile"
    folder.mkdir()
    (folder / "b.jsonl").write_bytes(_pile_line("from b", "X") + b"\n")
    frame = zstandard.ZstdCompressor().compress(_pile_line("from a", "X") + b"\n")
    (folder / "a.jsonl.zst").write_bytes(frame + frame)  # two concatenated frames
    (folder / "ignored.txt").write_text("not read by the pile reader")
    config = CorpusConfig(source=str(folder), format="pile")
    assert list(iter_documents(config)) == ["from a", "from a", "from b"]


def test_text_readers(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("single document\n")
    assert list(read_text(one)) == ["single document\n"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("# bee")
    (folder / "a.txt").write_text("ay ☃")
    (folder / "sub" / "c.rst").write_text("sea")
    (folder / "skip.py").write_text("not text")
    (folder / "bad.txt").write_bytes(b"line one\nbroken \xfe here")
    stats = ReadStats()
    assert list(read_text(folder, stats=stats)) == ["ay ☃", "# bee", "sea"]
    assert stats.malformed == {"invalid_utf8": 1} and stats.examples[0].startswith(f"{folder / 'bad.txt'}:2:")
    assert CorpusConfig(source=str(folder)).resolved_format() == "text"
    with pytest.raises(CorpusError, match="bad.txt:2: invalid_utf8"):
        list(iter_documents(CorpusConfig(source=str(folder), strict=True)))


def test_limits(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i:02d}.txt").write_text("x" * 100)
    assert len(list(iter_documents(CorpusConfig(source=str(folder), max_documents=3)))) == 3
    assert len(list(iter_documents(CorpusConfig(source=str(folder), max_bytes=250)))) == 3  # 300 >= 250
    assert len(list(iter_documents(CorpusConfig(source=str(folder), max_bytes=300)))) == 3


def test_empty_corpus(tmp_path, pile_zst):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="empty corpus"):
        list(iter_documents(CorpusConfig(source=str(empty))))
    with pytest.raises(CorpusError, match="no documents .*pile_set_names.*empty corpus"):
        list(iter_documents(CorpusConfig(source=str(pile_zst), pile_set_names=("Nope",))))
    bad_only = tmp_path / "bad.jsonl"
    bad_only.write_bytes(b"nope\n\n{}\n")
    with pytest.raises(CorpusError, match="2 malformed skipped"):
        list(iter_documents(CorpusConfig(source=str(bad_only))))


@pytest.mark.parametrize("kwargs, field, message", [
    ({"source": "/no/such/path"}, "source", "no such file"),
    ({"format": "xml"}, "format", "must be one of auto, pile, text, python-stdlib"),
    ({"max_bytes": -1}, "max_bytes", r"must be an integer in \[1, inf\], got -1"),
    ({"max_documents": 0}, "max_documents", r"must be an integer in \[1, inf\], got 0"),
    ({"max_documents": 1.5}, "max_documents", "must be an integer"),
    ({"format": "pile"}, "format", "python-stdlib\" needs format auto or python-stdlib"),
    ({"pile_set_names": "Github"}, "pile_set_names", "tuple"),
    ({"pile_set_names": ("Github",)}, "pile_set_names", "Pile lines only"),
])
def test_bad_config(kwargs, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        CorpusConfig(**kwargs).validate()
    assert err.value.field == field


def test_corrupt_zst(tmp_path):
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(b"this is not zstd data at all")
    with pytest.raises(CorpusError, match="bad.jsonl.zst: corrupt zstd stream"):
        list(iter_documents(CorpusConfig(source=str(path))))


def test_bad_config_paths(tmp_path):
    odd = tmp_path / "data.csv"
    odd.write_text("a,b")
    with pytest.raises(ConfigError, match="cannot tell the format") as err:
        CorpusConfig(source=str(odd)).validate()
    assert err.value.field == "format"
    with pytest.raises(ConfigError, match="reads only source") as err:
        CorpusConfig(source=str(odd), format="python-stdlib").validate()
    assert err.value.field == "source"


def test_config_docstring_documents_every_field():
    doc = CorpusConfig.__doc__.split("Attributes:")[1]
    for name in CorpusConfig.__dataclass_fields__:
        assert f"\n        {name}:" in doc


# ------------------------------------------------------------------------------------------------ embedded

def test_embedded_corpus():
    files = embedded.stdlib_files()
    rel = [p.relative_to(embedded.stdlib_root()).as_posix() for p in files]
    assert rel == sorted(rel) and "os.py" in rel and "json/decoder.py" in rel
    assert not any(part in embedded.EXCLUDED_DIRS for r in rel for part in r.split("/")[:-1])
    assert "pydoc_data/topics.py" not in rel and "encodings/cp1252.py" not in rel and "encodings/utf_8.py" in rel
    docs = list(iter_documents(CorpusConfig(max_documents=5)))
    assert docs[0] == files[0].read_text(encoding="utf-8")
    summary = embedded.stdlib_summary()
    topics = embedded.help_topics()
    assert summary["documents"] == len(files) + len(topics)
    assert summary["malformed"] == 0
    assert 3e6 < summary["bytes"] < 40e6, summary  # CPython 3.11: 747 documents, 10.6 MB
    fp = embedded.stdlib_fingerprint()
    assert fp["files"] == len(files) and fp == embedded.stdlib_fingerprint()


def test_embedded_round_trip_first_200(qwen):
    docs = list(iter_documents(CorpusConfig(max_documents=200)))
    assert sum("def " in d or "import " in d for d in docs) > 150
    for doc in docs:
        assert qwen.decode(qwen.encode(doc)) == unicodedata.normalize("NFC", doc)


def test_embedded_shards_small(qwen, tmp_path):
    config = CorpusConfig(max_bytes=100_000)
    shards = tokenize_corpus(config, qwen, tmp_path, quiet=True)
    docs = list(iter_documents(config))
    assert shards.num_documents == len(docs) and shards.num_bytes >= 100_000
    assert shards.manifest["source"]["name"] == "python-stdlib" and "python" in shards.manifest["source"]
    assert shards.directory.name.startswith("python-stdlib-")


# ------------------------------------------------------------------------------------------------ shards

def _many_docs(tmp_path, n=60):
    path = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(0)
    words = ["alpha", "β-beta", "γάμμα", "☃", "🙂", "def", "x = 1\n", "\t", "日本語", "the", "of", "<|endoftext|>"]
    lines = [_pile_line(" ".join(rng.choice(words, size=int(rng.integers(1, 40)))), "Github") for _ in range(n)]
    lines.insert(10, b"{broken json")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _expected_tokens(tok, config):
    out = []
    for doc in iter_documents(config):
        out.extend(tok.encode(doc) + [tok.eos_id])
    return np.asarray(out, dtype=np.uint32)


def test_shards_token_stream_and_manifest(qwen, tmp_path):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    shards = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, batch_bytes=300, quiet=True)
    assert isinstance(shards, TokenShards)
    expected = _expected_tokens(qwen, config)
    tokens = shards.tokens()
    assert tokens.dtype == np.uint32 and np.array_equal(tokens, expected)
    assert shards.num_tokens == expected.size and shards.eos_id == 151643
    assert shards.num_documents == 60 and int((tokens == shards.eos_id).sum()) == 60
    m = shards.manifest
    for key in ("format_version", "corpus", "source", "tokenizer", "shards", "num_tokens", "documents", "bytes",
                "malformed", "elapsed_seconds"):
        assert key in m
    assert m["corpus"]["source"] == config.source
    assert m["tokenizer"] == {"name": "qwen2.5", "fingerprint": qwen.fingerprint(), "eos_id": 151643,
                              "vocab_size": 151665}
    assert m["source"]["files"][0]["path"] == "corpus.jsonl" and "mtime_ns" in m["source"]["files"][0]
    assert m["malformed"]["counts"] == {"invalid_json": 1} and ":11:" in m["malformed"]["examples"][0]
    assert len(m["shards"]) > 2 and all(s["num_tokens"] >= 200 for s in m["shards"][:-1])
    arrays = shards.arrays()
    assert [a.size for a in arrays] == [s["num_tokens"] for s in m["shards"]]
    for array, record, path in zip(arrays, m["shards"], shards.paths):
        assert not array.flags.writeable and array[-1] == shards.eos_id  # shards end at document ends
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    assert not (shards.directory / "progress.json").exists()
    assert open_shards(shards.directory, verify=True).manifest == json.loads((shards.directory / "manifest.json")
                                                                               .read_text())


def test_shards_reused_without_tokenizing(qwen, tmp_path, monkeypatch):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    first = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    mtimes = [p.stat().st_mtime_ns for p in first.paths]

    def boom(*args, **kwargs):
        raise AssertionError("re-tokenized")

    monkeypatch.setattr(qwen, "encode_arrays", boom)
    again = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    assert again.directory == first.directory and again.manifest == first.manifest
    assert [p.stat().st_mtime_ns for p in again.paths] == mtimes
    with pytest.raises(CorpusError, match="strict=True but this corpus has 1 malformed"):
        tokenize_corpus(CorpusConfig(source=config.source, strict=True), qwen, tmp_path / "cache", shard_tokens=200)
    # A changed input gets a new directory (and needs tokenizing).
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(path.read_bytes() + _pile_line("one more", "Github") + b"\n")
    with pytest.raises(AssertionError, match="re-tokenized"):
        tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)


def test_shards_rebuilt_when_corrupt(qwen, tmp_path):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    first = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    expected = first.tokens()
    first.paths[1].write_bytes(first.paths[1].read_bytes()[:-4])
    with pytest.raises(CorpusError, match="has .* bytes, expected"):
        open_shards(first.directory)
    with pytest.warns(RuntimeWarning, match="cache is damaged, re-tokenizing the corpus: incomplete shard directory"):
        rebuilt = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    assert open_shards(rebuilt.directory, verify=True).num_tokens == expected.size
    assert np.array_equal(rebuilt.tokens(), expected)


def test_same_size_shard_corruption_is_detected_and_repaired(qwen, tmp_path):
    """Swapping two token ids keeps every file size: only the content hash can tell, and the reuse checks it."""
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    first = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    expected = first.tokens().copy()
    data = np.fromfile(first.paths[0], dtype=np.uint32)
    i, j = 3, 7
    assert data[i] != data[j]
    data[[i, j]] = data[[j, i]]
    data.tofile(first.paths[0])
    assert open_shards(first.directory).num_tokens == expected.size       # sizes alone look fine
    with pytest.warns(RuntimeWarning, match="does not match its recorded sha256"):
        rebuilt = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=200, quiet=True)
    assert np.array_equal(rebuilt.tokens(), expected)
    assert open_shards(rebuilt.directory, verify=True).num_tokens == expected.size


def test_resume_after_interruption(qwen, tmp_path, monkeypatch):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    reference = tokenize_corpus(config, qwen, tmp_path / "reference", shard_tokens=150, batch_bytes=100,
                                num_workers=1, quiet=True)

    real_iter = shards_mod.iter_documents

    def interrupted(cfg, stats=None):
        for i, doc in enumerate(real_iter(cfg, stats)):
            if i == 40:
                raise KeyboardInterrupt("simulated interruption")
            yield doc

    monkeypatch.setattr(shards_mod, "iter_documents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=150, batch_bytes=100, num_workers=1,
                        quiet=True)
    monkeypatch.undo()
    directory = tmp_path / "cache" / reference.directory.name
    progress = json.loads((directory / "progress.json").read_text())
    done = len(progress["shards"])
    assert 0 < done < len(reference.manifest["shards"])
    with pytest.raises(CorpusError, match="call tokenize_corpus again to resume"):
        open_shards(directory)

    encoded = []
    original = qwen.encode_arrays

    def counting(texts):
        encoded.extend(texts)
        return original(texts)

    monkeypatch.setattr(qwen, "encode_arrays", counting)
    resumed = tokenize_corpus(config, qwen, tmp_path / "cache", shard_tokens=150, batch_bytes=100, num_workers=1,
                              quiet=True)
    assert resumed.manifest["resumed_shards"] == done
    skipped = sum(s["documents"] for s in progress["shards"])
    assert len(encoded) == 60 - skipped
    assert [s for s in resumed.manifest["shards"]] == reference.manifest["shards"]
    for a, b in zip(resumed.paths, reference.paths):
        assert a.read_bytes() == b.read_bytes()
    assert resumed.manifest["malformed"] == reference.manifest["malformed"]
    assert not (directory / "progress.json").exists()


def test_threads_do_not_change_result(qwen, tmp_path):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    single = tokenize_corpus(config, qwen, tmp_path / "one", num_workers=1, shard_tokens=300, batch_bytes=64,
                             quiet=True)
    multi = tokenize_corpus(config, qwen, tmp_path / "three", num_workers=3, shard_tokens=300, batch_bytes=500,
                            quiet=True)
    assert single.manifest["shards"] == multi.manifest["shards"]
    assert np.array_equal(single.tokens(), multi.tokens())


class _MinimalTokenizer:
    """Only the basic protocol (no encode_arrays): the pipeline falls back to encode_batch."""

    def __init__(self, inner):
        self.inner, self.name, self.vocab_size, self.eos_id = inner, "minimal", inner.vocab_size, inner.eos_id

    def encode_batch(self, texts, num_threads=1):
        return self.inner.encode_batch(texts, num_threads=num_threads)

    def fingerprint(self):
        return "minimal-" + self.inner.fingerprint()


def test_other_tokenizers(qwen, tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers

    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    minimal = tokenize_corpus(config, _MinimalTokenizer(qwen), tmp_path / "cache", shard_tokens=300, quiet=True)
    assert np.array_equal(minimal.tokens(), _expected_tokens(qwen, config))
    vocab = {w: i for i, w in enumerate(["[UNK]", "</s>", "alpha", "def", "the"])}
    hf = HF(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "wl.json"))
    tok = load_tokenizer(str(tmp_path / "wl.json"))
    shards = tokenize_corpus(config, tok, tmp_path / "cache", quiet=True)
    assert shards.eos_id == 1 and np.array_equal(shards.tokens(), _expected_tokens(tok, config))
    assert shards.manifest["tokenizer"]["name"] == f"hf:{tmp_path / 'wl.json'}"
    assert shards.directory != minimal.directory


def test_tokenize_bad_arguments(qwen, tmp_path):
    config = CorpusConfig(source=str(_many_docs(tmp_path)))
    with pytest.raises(ConfigError, match="num_workers"):
        tokenize_corpus(config, qwen, tmp_path, num_workers=0)
    with pytest.raises(ConfigError, match="shard_tokens"):
        tokenize_corpus(config, qwen, tmp_path, shard_tokens=-5)
    with pytest.raises(ConfigError, match="tokenizer"):
        tokenize_corpus(config, object(), tmp_path)
    with pytest.raises(CorpusError, match="no manifest.json"):
        open_shards(tmp_path)
    assert not any(name.startswith("corpus-") for name in os.listdir(tmp_path))


def _multi_frame_zst(path, n_lines=400, per_frame=100):
    lines = [_pile_line(f"document number {i} " + "word " * 20, "Github") for i in range(n_lines)]
    c = zstandard.ZstdCompressor()
    frames = [c.compress(b"\n".join(lines[k:k + per_frame]) + b"\n") for k in range(0, n_lines, per_frame)]
    path.write_bytes(b"".join(frames))
    return frames


def test_truncated_multi_frame_zst_is_reported_not_read_as_a_shorter_corpus(tmp_path):
    path = tmp_path / "00.jsonl.zst"
    frames = _multi_frame_zst(path)
    assert len(list(read_pile(path))) == 400                                    # intact: every line
    cut = sum(len(f) for f in frames[:3]) + len(frames[3]) // 2                 # halfway through frame 4
    path.write_bytes(path.read_bytes()[:cut])
    stats = ReadStats()
    docs = list(read_pile(path, stats=stats))
    assert 300 <= len(docs) < 400 and all(d.startswith("document number") for d in docs)
    assert stats.malformed == {"truncated": 1} and str(path) in stats.examples[0]
    with pytest.raises(CorpusError, match=r"00\.jsonl\.zst: truncated: the zstd stream ends inside a frame"):
        list(read_pile(path, strict=True))
    # a single-frame file cut short: truncated too (not an invalid_json somewhere)
    single = tmp_path / "one.jsonl.zst"
    _multi_frame_zst(single, per_frame=400)
    single.write_bytes(single.read_bytes()[:-50])
    stats = ReadStats()
    list(read_pile(single, stats=stats))
    assert stats.malformed == {"truncated": 1}
