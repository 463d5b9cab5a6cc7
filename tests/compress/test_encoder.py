"""Compressing the real MiniLM encoder: each result reloads where an encoder is used (transformers' AutoModel,
sentence-transformers, lmforge serve's Embedder) and its embeddings stay within the bounds docs/compress.md states."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.compress import compare, factorize, prune, quantize, write_quality_report
from lmforge.errors import UserInputError
from lmforge.serve.embed import Embedder, is_embedding_model

TEXTS = ["The teacher finds the old card.", "What is 92 minus 84?", "A dog sleeps in the sun."]
# (mean cosine, top-1 agreement) on the 24 held-out sentences below, measured: nf4 0.971 / 79.2%, MLP-pruned (Wanda,
# 25% of the channels) 0.907 / 70.8%, SVD at energy 0.95 0.864 / 41.7%. The bounds docs/compress.md states:
BOUNDS = {"bnb-nf4": (0.95, 0.7), "prune-wanda-mlp-0.25": (0.85, 0.6), "svd-energy-0.95": (0.82, 0.3)}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, minilm_dir):
    """The three compressed MiniLMs and one report of them beside the original (one thread: a shared box's
    CPUs thrash on SVD otherwise)."""
    folder = tmp_path_factory.mktemp("minilm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quantize(minilm_dir, folder / "nf4", method="bnb-nf4")
        prune(minilm_dir, folder / "mlp", sparsity=0.25, method="wanda", structure="mlp", samples=8)
        factorize(minilm_dir, folder / "svd", energy=0.95)
    finally:
        torch.set_num_threads(threads)
    paths = {"bnb-nf4": folder / "nf4", "prune-wanda-mlp-0.25": folder / "mlp", "svd-energy-0.95": folder / "svd"}
    report = compare(minilm_dir, [(str(path), method) for method, path in paths.items()], limit=24, runs=3)
    return paths, report


def _rows(report):
    return {row.method: row for row in report.compressed}


def _sentence_transformers_agrees_with_serve(folder):
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    embedder = Embedder(str(folder))
    assert torch.tensor(embedder.embed(embedder.token_ids(TEXTS))) == pytest.approx(torch.tensor(expected), abs=1e-4)


def test_nf4_encoder_reloads_quantized_in_every_runtime_within_its_bound(compressed):
    from transformers import AutoModel

    paths, report = compressed
    reloaded = AutoModel.from_pretrained(paths["bnb-nf4"], device_map="cpu")
    assert type(reloaded.encoder.layer[0].intermediate.dense).__name__ == "Linear4bit"
    assert is_embedding_model(paths["bnb-nf4"])  # lmforge serve routes it to /v1/embeddings
    _sentence_transformers_agrees_with_serve(paths["bnb-nf4"])
    row = _rows(report)["bnb-nf4"]
    assert row.size_bytes < 0.7 * report.original.size_bytes  # the embeddings (half the weights) stay float
    assert row.mean_cosine >= BOUNDS["bnb-nf4"][0] and row.top1_agreement >= BOUNDS["bnb-nf4"][1]


def test_mlp_pruned_encoder_is_a_smaller_bert_everywhere_within_its_bound(compressed):
    from transformers import AutoModel

    paths, report = compressed
    reloaded = AutoModel.from_pretrained(paths["prune-wanda-mlp-0.25"])
    assert reloaded.config.intermediate_size == 1152 and reloaded.encoder.layer[5].output.dense.in_features == 1152
    _sentence_transformers_agrees_with_serve(paths["prune-wanda-mlp-0.25"])
    row = _rows(report)["prune-wanda-mlp-0.25"]
    assert row.params < report.original.params and row.size_bytes < report.original.size_bytes
    cosine, top1 = BOUNDS["prune-wanda-mlp-0.25"]
    assert row.mean_cosine >= cosine and row.top1_agreement >= top1


def test_factorized_encoder_is_served_by_lmforge_within_its_bound(compressed):
    paths, report = compressed
    layout = json.loads((paths["svd-energy-0.95"] / "lmforge_lowrank.json").read_text())
    rank = layout["ranks"]["encoder.layer.0.attention.self.query"]
    assert layout["auto_class"] == "AutoModel" and rank < 192  # below 384·384 / (384 + 384): it shrinks
    assert not any(name.startswith("pooler") for name in layout["ranks"])  # only the blocks' layers
    embedder = Embedder(str(paths["svd-energy-0.95"]))  # the /v1/embeddings loader
    query = embedder.model.encoder.layer[0].attention.self.query
    assert [layer.weight.shape for layer in query] == [torch.Size([rank, 384]), torch.Size([384, rank])]
    assert embedder.pooling.normalize and embedder.pooling.mode == "mean"  # the original's pooling travelled
    row = _rows(report)["svd-energy-0.95"]
    cosine, top1 = BOUNDS["svd-energy-0.95"]
    assert row.params < report.original.params and row.mean_cosine >= cosine and row.top1_agreement >= top1


def test_encoder_report_gives_embedding_figures_not_perplexity(compressed, tmp_path):
    _, report = compressed
    assert report.kind == "encoder" and report.limit == 24
    original = report.original
    assert original.mean_cosine == pytest.approx(1.0) and original.top1_agreement == 1.0
    for row in (original, *report.compressed):
        assert row.perplexity is None and row.exact_match is None and row.decode_tokens_per_second is None
        assert len(row.encode_runs) == 3 and row.encode_sentences_per_second > 0
    paths = write_quality_report(report, tmp_path)
    table = paths["markdown"].read_text()
    assert "top-1 agreement" in table and "perplexity" not in table and "bnb-nf4" in table
    assert json.loads(paths["json"].read_text())["kind"] == "encoder"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_2_4_pruning_of_an_encoder_touches_only_its_blocks(tmp_path, minilm_dir):
    import shutil

    from transformers import AutoModel, BertConfig, BertModel

    tiny = tmp_path / "tiny-bert"  # MiniLM's tokenizer and sentence-transformers files on a 2-layer, hidden-32 BERT
    shutil.copytree(minilm_dir, tiny)  # its weights and config.json are overwritten below
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tiny)
    prune(tiny, tmp_path / "sparse", method="magnitude", pattern="2:4")
    original, pruned = AutoModel.from_pretrained(tiny), AutoModel.from_pretrained(tmp_path / "sparse")
    assert is_embedding_model(tmp_path / "sparse") and (tmp_path / "sparse" / "1_Pooling" / "config.json").is_file()
    groups = pruned.encoder.layer[1].attention.self.key.weight.reshape(32, -1, 4)
    assert bool(((groups == 0).sum(-1) >= 2).all())
    assert torch.equal(pruned.pooler.dense.weight, original.pooler.dense.weight)  # not inside the blocks
    assert torch.equal(pruned.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)


def test_gguf_refuses_an_encoder_in_one_line(tmp_path, minilm_dir):
    with pytest.raises(UserInputError, match="is an encoder; lmforge writes GGUF for decoders only") as error:
        quantize(minilm_dir, tmp_path / "m.gguf", method="gguf-q8_0")
    assert "\n" not in str(error.value) and not (tmp_path / "m.gguf").exists()


def test_a_module_path_leaving_the_model_folder_is_refused(tmp_path):
    """modules.json comes with a downloaded repo: a module path must not copy files from outside the folder."""
    import json

    from lmforge.compress.encoder import copy_sentence_transformers_files
    from lmforge.errors import FormatError

    source, out, outside = tmp_path / "model", tmp_path / "out", tmp_path / "secrets"
    for folder in (source, out, outside):
        folder.mkdir()
    (outside / "key.json").write_text("{}")
    (source / "modules.json").write_text(json.dumps([{"path": "../secrets", "type": "x.Pooling"}]))
    with pytest.raises(FormatError, match="leaves the model folder"):
        copy_sentence_transformers_files(source, out)
    assert not list(out.rglob("key.json")) and not (tmp_path / "secrets" / "secrets").exists()
