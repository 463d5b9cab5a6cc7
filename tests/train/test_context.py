import json

from lmforge.train.context import load_stage_data


def test_held_out_fraction_never_puts_one_prompt_in_both_train_and_validation(tmp_path, make_config):
    rows = []
    for i in range(30):  # every prompt three times, as scraped data often has it
        rows += [{"instruction": f"What is {i} plus 1?", "output": str(i + 1)}] * 3
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = make_config("sft", data={"train": str(path), "max_examples": None, "eval_fraction": 0.2})

    loaded = load_stage_data(config, "chat")

    def prompts(dataset):
        return {m[0]["content"] for m in dataset["messages"]}

    assert len(loaded.train) + len(loaded.eval) == 90
    assert prompts(loaded.eval)
    assert not prompts(loaded.train) & prompts(loaded.eval)
