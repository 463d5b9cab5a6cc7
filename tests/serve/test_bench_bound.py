from lmforge.serve.bench import decode_bound


def test_decode_bound_reads_an_adapter_folder_through_its_merged_model(tmp_path, tiny_llama_dir):
    """A training run leaves an adapter (no config.json of its own); the bound comes from the loaded model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)

    bound = decode_bound(str(adapter))

    assert bound.weight_bytes == weight_bytes  # merged: the base's weights, no adapter left
    assert bound.decode_tokens_per_second > 0


def test_decode_bound_takes_an_already_loaded_model(tiny_llama_dir):
    """bench serve passes the baseline's loaded model instead of loading the folder a second time."""
    from lmforge.generate.load import load_model

    loaded = load_model(str(tiny_llama_dir), device="cpu")
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())

    bound = decode_bound(loaded)

    assert bound.weight_bytes == weight_bytes == decode_bound(str(tiny_llama_dir)).weight_bytes
    assert bound.decode_tokens_per_second > 0
