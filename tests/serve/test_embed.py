"""/v1/embeddings on the real MiniLM checkpoint: the vectors sentence-transformers gives, through the openai client."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

TEXTS = ["The quick brown fox jumps over the lazy dog.", "hello", "Sort the numbers 3 1 2: 1 2 3."]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    from lmforge.serve.embed import Embedder

    return Embedder(str(minilm_dir), name="minilm")


@pytest.fixture(scope="module")
def embed_url(encoder):
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    with run_server(create_app(Engine({}), embedders={"minilm": encoder})) as (url, _):
        yield url


def test_vectors_match_sentence_transformers(encoder, minilm_dir, embed_url):
    """The package's own reference: SentenceTransformer(folder).encode, mean pooling + Normalize from its
    modules.json, to 1e-5; through the openai client, which asks for base64 and decodes it."""
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)
    assert encoder.pooling.mode == "mean" and encoder.pooling.normalize and encoder.pooling.max_tokens == 256
    client = openai.OpenAI(base_url=f"{embed_url}/v1", api_key="unused", max_retries=0)
    reply = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([item.embedding for item in reply.data])
    assert got.shape == (3, 384) and np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    as_floats = client.embeddings.create(model="minilm", input=TEXTS[1], encoding_format="float")
    assert np.abs(np.array(as_floats.data[0].embedding) - expected[1]).max() < 1e-5
    assert reply.usage.prompt_tokens == sum(len(ids) for ids in encoder.token_ids(TEXTS))


def test_token_ids_embed_like_their_text(encoder, embed_url):
    ids = encoder.token_ids([TEXTS[0]])[0]
    by_ids = httpx.post(f"{embed_url}/v1/embeddings", json={"input": [ids], "model": "minilm"}).json()
    by_text = httpx.post(f"{embed_url}/v1/embeddings", json={"input": TEXTS[0]}).json()
    assert np.allclose(by_ids["data"][0]["embedding"], by_text["data"][0]["embedding"], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "word " * 300}, "input", "reads at most 256"),
        ({"input": "hi", "dimensions": 128}, "dimensions", "384-dimensional"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": [[1, 10**6]]}, "input", "token ids must be in"),
    ],
)
def test_bad_embedding_requests_are_400(embed_url, body, param, words):
    response = httpx.post(f"{embed_url}/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_an_encoder_cannot_generate_and_lists_its_size(embed_url):
    response = httpx.post(f"{embed_url}/v1/completions", json={"model": "minilm", "prompt": "hi"})
    assert response.status_code == 400 and "/v1/embeddings" in response.json()["error"]["message"]
    card = httpx.get(f"{embed_url}/v1/models/minilm").json()
    assert card["dimensions"] == 384 and card["max_model_len"] == 256


def test_serve_recognises_an_encoder_folder(minilm_dir, tiny_llama_dir, tmp_path):
    from lmforge.serve.embed import is_embedding_model

    assert is_embedding_model(minilm_dir) and not is_embedding_model(tiny_llama_dir)
    import json

    for architecture, encoder in (("GPT2LMHeadModel", False), ("BertModel", True), ("OpenAIGPTLMHeadModel", False)):
        folder = tmp_path / architecture
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}))
        assert is_embedding_model(folder) is encoder, architecture
