"""The fake-tensor simulation measures a real transformers training step, and the analytic model agrees with it."""

from __future__ import annotations

import functools

import pytest

from lmforge.errors import UserInputError
from lmforge.plan.memory import training_memory
from lmforge.plan.models import resolve_model, spec_from_config
from lmforge.plan.setup import Layout, TrainingSetup
from lmforge.plan.simulate import simulate_training


def small_llama(layers: int = 4):
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 8000,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }
    return spec_from_config(config, name=f"small-llama-{layers}")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_extrapolation_from_two_and_three_layers_equals_a_full_simulation():
    # With recomputation and AMP this 6-layer model peaks at the end of backward, a 2-layer one at its start:
    # extrapolating each moment separately still lands on the full simulation's peak exactly.
    setup = TrainingSetup(method="full", precision="bf16-mixed", recompute="full", seq_len=256, micro_batch_size=2)
    spec = small_llama(layers=6)
    extrapolated = simulate_training(spec, setup)
    simulated = simulate_training(spec, setup, extrapolate_above_layers=6)
    assert extrapolated.simulated_layers == (2, 3) and simulated.simulated_layers == (6,)
    assert extrapolated.peak_bytes == simulated.peak_bytes


@pytest.mark.parametrize(
    "setup",
    [
        TrainingSetup(method="full", precision="fp32", seq_len=512),
        TrainingSetup(method="full", precision="bf16", recompute="full", seq_len=512),
        TrainingSetup(method="lora", precision="bf16", recompute="full", seq_len=512, micro_batch_size=2),
        TrainingSetup(method="full", precision="bf16-mixed", attention="eager", seq_len=256),
    ],
    ids=lambda s: f"{s.method}-{s.precision}-{s.recompute}-{s.attention}",
)
def test_analytic_peak_is_within_ten_percent_of_the_measured_one(setup):
    spec = small_llama()
    measured = simulate_training(spec, setup, extrapolate_above_layers=4)
    analytic = training_memory(spec, setup, Layout())
    predicted = analytic.total_bytes - analytic["overhead"]  # a fake run has no CUDA context
    assert predicted == pytest.approx(measured.peak_bytes, rel=0.10)


# LayerNorm blocks with a plain (2-matrix) GELU MLP, as their config.json files write them.
_LAYERNORM_DECODERS = {
    "phi": {"architectures": ["PhiForCausalLM"], "hidden_act": "gelu_new", "resid_pdrop": 0.0},
    "gpt_neox": {"architectures": ["GPTNeoXForCausalLM"], "hidden_act": "gelu", "hidden_dropout": 0.0},
    "starcoder2": {"architectures": ["Starcoder2ForCausalLM"], "num_key_value_heads": 2, "residual_dropout": 0.0},
}


@pytest.mark.parametrize("model_type", sorted(_LAYERNORM_DECODERS))
def test_layernorm_and_plain_mlp_blocks_are_priced_as_the_simulation_measures_them(model_type):
    """Phi, GPT-NeoX and StarCoder2 save what nn.LayerNorm and a 2-matrix MLP save, not a Llama block's RMSNorm
    upcasts and SwiGLU tensors (which overpriced them by 18-22%)."""
    config = {
        **_LAYERNORM_DECODERS[model_type],
        "model_type": model_type,
        "vocab_size": 1024,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "max_position_embeddings": 2048,
    }
    spec = spec_from_config(config, name=model_type)
    setup = TrainingSetup(method="full", precision="bf16-mixed", seq_len=1024)
    measured = simulate_training(spec, setup)
    analytic = training_memory(spec, setup, Layout())
    assert analytic.total_bytes - analytic["overhead"] == pytest.approx(measured.peak_bytes, rel=0.05)


def test_simulation_sees_lora_and_recomputation_save_memory():
    spec = small_llama()

    def simulate(setup: TrainingSetup):
        return simulate_training(spec, setup, extrapolate_above_layers=4)

    full = simulate(TrainingSetup(method="full", seq_len=512))
    lora = simulate(TrainingSetup(method="lora", seq_len=512))
    recomputed = simulate(TrainingSetup(method="lora", seq_len=512, recompute="full"))
    assert recomputed.peak_bytes < lora.peak_bytes < full.peak_bytes
    # AdamW: two fp32 states per parameter (plus fused AdamW's step counters).
    assert full.memory["optimizer_states"] == pytest.approx(2 * full.memory["master_weights"], rel=1e-4)
    assert lora.memory["adapter"] > 0
    assert lora.memory["optimizer_states"] == pytest.approx(2 * lora.memory["adapter"], rel=1e-3)


def test_a_70b_model_simulates_by_extrapolating_from_a_few_layers():
    """How long it takes is a benchmark's figure (docs/plan-memory.md); here: it extrapolates, and agrees."""
    result = simulate_training(resolve_model("llama-3.1-70b"), TrainingSetup(method="lora", seq_len=4096))
    assert result.extrapolated and result.num_layers == 80
    analytic = training_memory(resolve_model("llama-3.1-70b"), TrainingSetup(method="lora", seq_len=4096))
    assert analytic.total_bytes - analytic["overhead"] == pytest.approx(result.peak_bytes, rel=0.10)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (TrainingSetup(method="qlora"), "methods full, lora"),
        (TrainingSetup(optimizer="adamw-8bit"), "optimizers"),
        (TrainingSetup(recompute="selective"), "recompute"),
    ],
)
def test_unsupported_setups_are_user_errors(setup, message):
    with pytest.raises(UserInputError, match=message):
        simulate_training(small_llama(), setup)


def test_encoder_models_are_refused():
    with pytest.raises(UserInputError, match="decoder"):
        simulate_training(resolve_model("bert-base-uncased"), TrainingSetup())


@functools.lru_cache(maxsize=16)
def _simulated_peak(setup: TrainingSetup) -> int:
    return simulate_training(small_llama(layers=2), setup).peak_bytes


@pytest.mark.parametrize(
    ("technique", "setup"),
    [
        ("chunked loss", TrainingSetup(method="full", precision="bf16", seq_len=256, loss="chunked")),
        (
            "activation offloading",
            TrainingSetup(method="full", precision="bf16", seq_len=256, offload_activations=True),
        ),
        (
            "activation offloading",
            TrainingSetup(method="lora", seq_len=128, offload_activations=True, recompute="full"),
        ),
        (
            "optimizer in backward",
            TrainingSetup(method="full", precision="bf16", seq_len=256, optimizer_in_backward=True),
        ),
        ("flash attention", TrainingSetup(method="full", precision="bf16", seq_len=256, attention="flash")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_technique_is_priced_as_the_simulated_step_measures_it(technique, setup):
    """The analytic total (without the CUDA overhead) within the documented 10 % of the fake-tensor step, and the
    technique's own term - the change from turning it off - within 10 % of the step too."""
    from dataclasses import replace

    spec = small_llama(layers=2)

    def analytic(run: TrainingSetup) -> int:
        memory = training_memory(spec, run, Layout())
        return memory.total_bytes - memory["overhead"]  # a fake run has no CUDA context

    plain = replace(setup, loss="standard", offload_activations=False, optimizer_in_backward=False, attention="sdpa")
    measured, measured_plain = _simulated_peak(setup), _simulated_peak(plain)
    assert analytic(setup) == pytest.approx(measured, rel=0.10)
    term, measured_term = analytic(setup) - analytic(plain), measured - measured_plain
    assert abs(term - measured_term) <= 0.10 * measured_plain, (term, measured_term)


def test_liger_fused_loss_is_refused_by_the_simulation():
    with pytest.raises(UserInputError, match="Liger"):
        simulate_training(small_llama(), TrainingSetup(loss="fused"))
