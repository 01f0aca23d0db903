"""E5 (``simulate pretrained``) on transformers checkpoints with their own tokenizer.json: one checkpoint of any
supported architecture, and a series of checkpoints of one tiny model trained a few torch steps apart (one
tokenization and one counting pass for the whole series), plus the series' bad inputs as one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from probsig_jax import simulate
from probsig_jax.corpus import CorpusConfig
from probsig_jax.experiments import corpus_alignment
from probsig_jax.experiments import pretrained as e5
from probsig_jax.experiments.corpus_alignment import CORPUS_ALIGNMENT, CorpusAnalysisConfig
from probsig_jax.experiments.pretrained import PretrainedExperimentConfig, checkpoint_series, run_pretrained
from probsig_jax.runs import to_jsonable

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_experiments_llm import SENTENCES  # noqa: E402
from test_hf_embeddings import KINDS, tiny_model  # noqa: E402

FAST = ["--quiet", "--top-tokens", "20", "--theory-rank", "6", "--permutations", "19", "--bootstrap", "20",
        "--num-workers", "1"]


def corpus_texts(seed: int = 0, docs: int = 40) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), 6)) for _ in range(docs)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def train_tokenizer(path: Path, texts: list[str], vocab_size: int = 300) -> Path:
    """A byte-level BPE trained on ``texts`` (with ``<|endoftext|>`` = id 0), saved as ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The corpus (jsonl), its tokenizer.json and the model's padded vocabulary size."""
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("e5data")
    texts = corpus_texts()
    corpus = write_jsonl(root / "corpus.jsonl", texts)
    tokenizer = train_tokenizer(root / "tokenizer.json", texts)
    ids = Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True)
    return {"corpus": corpus, "tokenizer": tokenizer, "ids": ids, "rows": 64 * (ids // 64 + 1), "texts": texts,
            "cache": root / "cache"}


def save_with_tokenizer(model, path: Path, tokenizer: Path) -> Path:
    model.save_pretrained(path)
    shutil.copyfile(tokenizer, path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def series(data, tmp_path_factory):
    """``root/step{0,3,6}``: one tiny GPT-NeoX (padded vocabulary, untied) trained 3 AdamW steps apart."""
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("series")
    tok = Tokenizer.from_file(str(data["tokenizer"]))
    stream = np.concatenate([tok.encode(t).ids for t in data["texts"]])
    batch = torch.as_tensor(stream[: 8 * 32].reshape(8, 32), dtype=torch.long)
    model = tiny_model("gpt_neox", vocab_size=data["rows"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    for step in range(7):
        if step % 3 == 0:
            save_with_tokenizer(model, root / f"step{step}", data["tokenizer"])
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
    return root


def _args(data, checkpoint, out, *extra):
    return ["pretrained", "--checkpoint", str(checkpoint), "--out", str(out), "--cache-dir", str(data["cache"]),
            "--corpus-source", str(data["corpus"]), *FAST, *extra]


def test_series_of_three_checkpoints_from_one_tokenization_and_count(data, series, tmp_path, monkeypatch):
    calls = {"tokenize": 0, "count": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(e5, "tokenize_corpus", counted("tokenize", e5.tokenize_corpus))
    monkeypatch.setattr(corpus_alignment, "count_context_pairs",
                        counted("count", corpus_alignment.count_context_pairs))
    corpus_alignment._ANALYSIS_CACHE.clear()
    out = tmp_path / "e5"
    assert simulate.main(_args(data, series, out, "--token-sets", "top")) == 0   # one set: fewer figures to draw
    assert calls == {"tokenize": 1, "count": 1}
    m = json.loads((out / "metrics.json").read_text())
    assert [p["step"] for p in m["series"]] == [0, 3, 6] and m["series_info"]["steps_from"] == "directory names"
    assert m["series_info"]["heatmap_steps"] == [0, 6] and m["checkpoint"].endswith("step6")
    assert m["model"]["architecture"] == "GPTNeoXForCausalLM" and not m["model"]["tied_embeddings"]
    assert m["model"]["padding_rows_dropped"] == data["rows"] - data["ids"]
    for name in ("top",):
        r = [p["token_sets"][name]["pretrained"]["embedding_vs_signature"]["pearson"] for p in m["series"]]
        assert len(r) == 3 and len(set(r)) == 3                     # the weights moved between the checkpoints
        for p in m["series"]:                                       # intervals, null and side tables per point
            table = p["token_sets"][name]
            assert "pearson_ci_low" in table["pretrained"]["unembedding_vs_signature"]
            assert "pearson_p" in table["pretrained"]["embedding_vs_theory"]
            assert set(table["side_specificity"]["pearson"]) == {"W_E", "W_U"}
        assert m["token_sets"][name] == m["series"][-1]["token_sets"][name]
        for family in ("pearson", "spearman", "topk_overlap", "strong_pair_precision", "side_specificity"):
            assert (out / f"series_{name}_{family}.png").is_file()
        for step in (0, 6):
            assert (out / f"heatmaps_{name}_step{step}.png").is_file()
        assert not (out / f"heatmaps_{name}_step3.png").exists()
    assert not list(out.glob(".step*"))
    arrays = np.load(out / "arrays.npz")
    assert list(arrays["series_steps"]) == [0, 3, 6] and "step3_top_embedding" in arrays
    report = (out / "report.md").read_text()
    assert "checkpoint series: 3 checkpoints at steps 0, 3, 6" in report and "top over training steps" in report
    assert "![series_top_pearson](series_top_pearson.png)" in report

    # the last point is what a single-checkpoint run of step6 reports
    single = run_pretrained(PretrainedExperimentConfig(
        checkpoint=str(series / "step6"), cache_dir=str(data["cache"]), num_workers=1,
        corpus=CorpusConfig(source=str(data["corpus"])), analysis=CorpusAnalysisConfig(theory_rank=6),
        alignment=CORPUS_ALIGNMENT.replace(token_sets=("top",), top_tokens=20, permutations=19, bootstrap=20)),
        quiet=True)
    assert "series" not in single.metrics
    assert json.loads(json.dumps(to_jsonable(single.metrics["token_sets"]))) == m["series"][-1]["token_sets"]


def test_checkpoints_listed_in_any_order_are_sorted_by_step(series):
    dirs = [str(series / f"step{s}") for s in (6, 0, 3)]
    parser, options = simulate.build_parser(["pretrained"])
    args = parser.parse_args(["pretrained", "--checkpoint", ",".join(dirs)])
    config = simulate.config_from_args("pretrained", args, options["pretrained"])
    assert config.checkpoint == tuple(dirs)
    spaced = parser.parse_args(["pretrained", "--checkpoint", *dirs[:2], "--checkpoint", dirs[2]])   # last use wins
    assert simulate.config_from_args("pretrained", spaced, options["pretrained"]).checkpoint == (dirs[2],)
    spaced = parser.parse_args(["pretrained", "--checkpoint", *dirs, "--quiet"])
    assert simulate.config_from_args("pretrained", spaced, options["pretrained"]).checkpoint == tuple(dirs)
    points, root = checkpoint_series(config.checkpoint)
    assert [s for s, _ in points] == [0, 3, 6] and root is None
    assert checkpoint_series((str(series),))[0] == points
    loaded = PretrainedExperimentConfig.from_dict({"checkpoint": str(series / "step0")})     # a pre-series record
    assert loaded.checkpoint == (str(series / "step0"),)
    assert PretrainedExperimentConfig.from_dict(json.loads(json.dumps(to_jsonable(config)))) == config


def test_unnumbered_checkpoints_keep_their_order_and_a_series_root_may_hold_the_tokenizer(data, series, tmp_path):
    late, early = tmp_path / "late", tmp_path / "early"
    shutil.copytree(series / "step6", late)
    shutil.copytree(series / "step0", early)
    assert checkpoint_series((str(late), str(early))) == ([(0, late), (1, early)], None)
    root = tmp_path / "root"
    shutil.copytree(series, root)
    for step in (0, 3, 6):
        (root / f"step{step}" / "tokenizer.json").unlink()
    shutil.copyfile(data["tokenizer"], root / "tokenizer.json")
    points, top = checkpoint_series((str(root),))
    tokenizer, vocab_map = e5._shared_vocabulary(PretrainedExperimentConfig(), [d for _, d in points], top)
    assert tokenizer.name == f"hf:{root}" and vocab_map is None


def _run_from_cli(data, *args):
    """run_pretrained on the config the command line gives (no figures drawn)."""
    parser, options = simulate.build_parser(["pretrained"])
    argv = _args(data, *args)
    out = argv.index("--out")
    config = simulate.config_from_args("pretrained", parser.parse_args(argv[:out] + argv[out + 2:]),
                                       options["pretrained"])
    return run_pretrained(config, quiet=True).metrics


def test_one_gpt2_checkpoint_end_to_end(data, tmp_path):
    path = save_with_tokenizer(tiny_model("gpt2", vocab_size=data["rows"]), tmp_path / "gpt2", data["tokenizer"])
    out = tmp_path / "e5"
    assert simulate.main(_args(data, path, out, "--token-sets", "top")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "series" not in m and m["tokenizer"] == f"hf:{path}" and m["checkpoint"] == str(path)
    assert m["model"] == {"vocab_size": data["rows"], "hidden_size": 16, "layers": 1, "tied_embeddings": True,
                          "architecture": "GPT2LMHeadModel", "embedding_tensor": "transformer.wte.weight",
                          "unembedding_tensor": "transformer.wte.weight",
                          "padding_rows_dropped": data["rows"] - data["ids"], "vocab_map": False}
    assert "tied" in m["note"] and "embedding_vs_signature" in m["token_sets"]["top"]["pretrained"]
    assert (out / "heatmaps_top.png").is_file() and (out / "signature_vs_embedding_top.png").is_file()
    assert "W_E vs phi_next" in (out / "report.md").read_text()


@pytest.mark.parametrize("kind", ["gpt_neox", "llama-tied", "mistral", "qwen2", "qwen3", "gemma", "gemma2"])
def test_every_family_in_the_table_runs_end_to_end_with_its_own_tokenizer(kind, data, tmp_path):
    """(gpt2 and untied llama: the tests around this one.)"""
    path = save_with_tokenizer(tiny_model(kind, vocab_size=data["rows"]), tmp_path / kind, data["tokenizer"])
    m = _run_from_cli(data, path, tmp_path / "unused")
    architecture, tied = KINDS[kind]
    assert m["model"]["architecture"] == architecture and m["model"]["tied_embeddings"] == tied
    assert m["tokenizer"] == f"hf:{path}" and m["model"]["padding_rows_dropped"] == data["rows"] - data["ids"]
    assert "embedding_vs_signature" in m["token_sets"]["top"]["pretrained"]


def test_one_llama_checkpoint_and_tensor_names_from_the_command_line(data, tmp_path):
    path = save_with_tokenizer(tiny_model("llama", vocab_size=data["rows"]), tmp_path / "llama", data["tokenizer"])
    m = _run_from_cli(data, path, tmp_path / "unused")
    assert m["model"]["architecture"] == "LlamaForCausalLM" and not m["model"]["tied_embeddings"]
    assert m["model"]["unembedding_tensor"] == "lm_head.weight" and "note" not in m
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "foo", "architectures": ["FooLM"]}))
    named = _run_from_cli(data, path, tmp_path / "unused", "--embedding-tensor", "model.embed_tokens.weight",
                          "--unembedding-tensor", "lm_head.weight")
    assert named["model"]["architecture"] == "FooLM"
    assert json.dumps(named["token_sets"]) == json.dumps(m["token_sets"])          # NaN (too few pairs) == NaN


@pytest.mark.parametrize("case", ["other_tokenizer", "other_vocab_size", "few_rows", "vocab_map_in_one",
                                  "heatmap_step", "same_step", "no_steps", "unknown_architecture", "bin_only"])
def test_bad_series_and_checkpoints_are_one_line_errors(case, data, series, tmp_path, capsys):
    root = tmp_path / "series"
    shutil.copytree(series, root)
    extra: list[str] = []
    if case == "other_tokenizer":
        train_tokenizer(root / "step3" / "tokenizer.json", corpus_texts(seed=1), vocab_size=280)
        expect = ["step3", "a series needs one tokenizer"]
    elif case == "other_vocab_size":
        shutil.rmtree(root / "step3")
        save_with_tokenizer(tiny_model("gpt_neox", vocab_size=data["rows"] + 64), root / "step3", data["tokenizer"])
        expect = ["step3/model.safetensors", "one vocabulary size"]
    elif case == "few_rows":
        root = save_with_tokenizer(tiny_model("gpt_neox", vocab_size=data["ids"] - 10), tmp_path / "small",
                                   data["tokenizer"])
        expect = ["vocab_size", "small/model.safetensors", "fewer than"]
    elif case == "vocab_map_in_one":
        (root / "step3" / "vocab_map.json").write_text(json.dumps({"original_ids": [0, 1, 2],
                                                                   "original_vocab_size": data["ids"]}))
        expect = ["vocab_map.json is missing", "a series needs one vocabulary map"]
    elif case == "heatmap_step":
        extra = ["--heatmap-steps", "4"]
        expect = ["heatmap_steps", "4 is not a step"]
    elif case == "same_step":
        root = f"{root / 'step3'},{root / 'step0'},{tmp_path / 'other' / 'step3'}"
        shutil.copytree(series / "step3", tmp_path / "other" / "step3")
        expect = ["checkpoint", "several checkpoints have step 3"]
    elif case == "no_steps":
        root = tmp_path / "empty"
        (root / "notes").mkdir(parents=True)
        expect = ["checkpoint", "no config.json and no step subdirectories"]
    elif case == "unknown_architecture":
        config = json.loads((root / "step0" / "config.json").read_text())
        (root / "step0" / "config.json").write_text(json.dumps({**config, "model_type": "foo",
                                                                "architectures": ["FooLM"]}))
        expect = ["embedding_tensor", "step0/config.json", "FooLM", "--embedding-tensor"]
    else:
        from safetensors.numpy import load_file

        weights = root / "step6" / "model.safetensors"
        torch.save({k: torch.as_tensor(v) for k, v in load_file(weights).items()}, root / "step6" / "pytorch_model.bin")
        weights.unlink()
        expect = ["step6/pytorch_model.bin", "safe_serialization=True"]
    out = tmp_path / "e5"
    capsys.readouterr()                                             # drop the save progress bars
    assert simulate.main(_args(data, root, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for piece in expect:
        assert piece in err, (piece, err)
    assert not out.exists()
