import pytest

from lmforge.files.names import parse_model_name

B = 10**9


def test_moe_name_with_active_params_and_release():
    name = parse_model_name("Qwen3-235B-A22B-Instruct-2507")
    assert (name.family, name.total_params, name.active_params) == ("Qwen3", 235 * B, 22 * B)
    assert (name.variant, name.release, name.is_moe) == ("Instruct", "2507", True)


def test_experts_times_size_and_version():
    name = parse_model_name("Mixtral-8x7B-v0.1")
    assert (name.family, name.num_experts, name.params_per_expert, name.version) == ("Mixtral", 8, 7 * B, "v0.1")
    assert name.total_params is None  # 8x7B is not 56B: the experts share attention and embeddings


def test_gguf_file_name_with_quant():
    name = parse_model_name("Llama-3.1-8B-Instruct-Q4_K_M.gguf")
    assert (name.family, name.total_params, name.variant) == ("Llama-3.1", 8 * B, "Instruct")
    assert (name.quantization, name.file_format) == ("Q4_K_M", "gguf")


def test_dot_separated_gguf_quant():
    name = parse_model_name("llama-2-7b.Q4_K_M.gguf")
    assert (name.family, name.total_params, name.quantization) == ("llama-2", 7 * B, "Q4_K_M")


def test_hub_id_with_organization_and_hf_suffix():
    name = parse_model_name("meta-llama/Llama-2-70b-chat-hf")
    assert (name.organization, name.family, name.total_params) == ("meta-llama", "Llama-2", 70 * B)
    assert (name.variant, name.file_format, name.extra) == ("chat", "hf", [])


@pytest.mark.parametrize("text", ["DeepSeek-V3", "phi-4"])
def test_names_without_a_size_keep_their_version_in_the_family(text: str):
    name = parse_model_name(text)
    assert name.family == text and name.total_params is None and name.version is None


@pytest.mark.parametrize(
    ("text", "family", "params", "variant", "quant", "version"),
    [
        ("gemma-2-9b-it", "gemma-2", 9 * B, "it", None, None),
        ("Qwen2.5-0.5B-Instruct-AWQ", "Qwen2.5", 500_000_000, "Instruct", "AWQ", None),
        ("Mistral-7B-Instruct-v0.3-GPTQ-4bit", "Mistral", 7 * B, "Instruct", "GPTQ-4bit", "v0.3"),
        ("TinyLlama-1.1B-Chat-v1.0", "TinyLlama", 1_100_000_000, "Chat", None, "v1.0"),
        ("gpt2", "gpt2", None, None, None, None),
        ("SmolLM2-135M-Instruct", "SmolLM2", 135_000_000, "Instruct", None, None),
    ],
)
def test_common_hub_names(text, family, params, variant, quant, version):
    name = parse_model_name(text)
    assert (name.family, name.total_params, name.variant, name.quantization, name.version) == (
        family, params, variant, quant, version,
    )  # fmt: skip


def test_context_length_tokens_are_not_parameters():
    name = parse_model_name("Phi-3-mini-128k-instruct")
    assert (name.family, name.context_tokens, name.total_params, name.variant) == (
        "Phi-3-mini",
        131072,
        None,
        "instruct",
    )


def test_active_only_moe_name_and_lowercase():
    name = parse_model_name("qwen3-30b-a3b")
    assert (name.total_params, name.active_params) == (30 * B, 3 * B)


def test_unrecognised_tokens_are_kept_not_dropped():
    assert parse_model_name("bert-base-uncased").extra == ["uncased"]
