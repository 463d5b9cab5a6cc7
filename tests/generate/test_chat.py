import io
import json

from lmforge.generate.chat import chat_loop
from lmforge.generate.sampling import sampling_params


def _run(loaded, script: str, **kwargs):
    output = io.StringIO()
    session = chat_loop(
        loaded,
        sampling_params(max_new_tokens=4, seed=0),
        input_stream=io.StringIO(script),
        output_stream=output,
        **kwargs,
    )
    return session, output.getvalue()


def test_history_grows_turn_by_turn_through_the_template(loaded):
    session, output = _run(loaded, "hello\nand again\n")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[2]["content"] == "and again"
    assert output.count(">>> ") == 3  # two turns, then end of input


def test_reset_system_preset_and_params_commands(loaded):
    script = "hi\n/system You are terse.\n/preset precise\n/params top_k=5 max_new_tokens=2\n/params\n/reset\n/quit\nnever read\n"
    session, output = _run(loaded, script)
    assert session.history == []
    assert session.system == "You are terse."
    assert session.messages() == [{"role": "system", "content": "You are terse."}]
    assert (session.params.temperature, session.params.top_p) == (0.3, 0.5)  # precise preset
    assert session.params.top_k == 5 and session.params.max_new_tokens == 2
    shown = json.loads([line for line in output.splitlines() if line.startswith(">>> {")][-1][4:])
    assert shown["top_k"] == 5
    assert "conversation cleared" in output and "never read" not in output


def test_bad_commands_print_one_line_and_the_chat_goes_on(loaded):
    session, output = _run(loaded, "/preset wild\n/params top_p=2\n/frobnicate\n/params nonsense\nhello\n")
    assert "Error: no preset 'wild'" in output
    assert "Error: top_p" in output
    assert "Error: unknown command /frobnicate" in output
    assert "Error: /params expects key=value" in output
    assert session.history[0] == {"role": "user", "content": "hello"}
    assert session.params.top_p == 0.7  # unchanged by the rejected value


def test_system_prompt_reaches_the_model(loaded):
    session, _ = _run(loaded, "hi\n", system="Be brief.")
    prompt = loaded.render_chat(session.messages()[:2])
    assert "<|im_start|>system\nBe brief." in prompt


def test_old_turns_are_dropped_to_fit_the_context(loaded):
    turn = "the quick brown fox " * 20
    assert 70 < len(loaded.tokenizer(turn)["input_ids"]) < 120
    session, output = _run(loaded, f"{turn}\n{turn}\n{turn}\n")
    assert "dropped the" in output
    assert session.history[0]["role"] == "user" and len(session.history) < 6


def test_a_turn_longer_than_the_context_is_refused_and_the_chat_goes_on(loaded):
    session, output = _run(loaded, "word " * 300 + "\nhi\n")
    assert "Error: prompt (" in output and "context length of 256" in output
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["hi"]


def test_save_appends_the_conversation_as_a_chat_record_lmforge_data_reads(loaded, tmp_path):
    from lmforge.data.load import load_data

    target = tmp_path / "chats.jsonl"
    _, output = _run(
        loaded, f"/save {target}\nhello\n/save {target}\n/reset\nagain\n/save {target}\n", system="Be brief."
    )
    assert "Error: nothing to save yet" in output
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(records) == 2
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[1]["messages"][1]["content"] == "again"
    assert load_data(str(target)).kind.value == "chat"


def test_default_reply_length_fits_a_small_context_with_one_note(tiny_llama_64_dir):
    """The default max_new_tokens (256) is beyond a 64-token context: every turn used to be refused."""
    from lmforge.generate.load import load_model

    loaded = load_model(str(tiny_llama_64_dir))
    output = io.StringIO()
    session = chat_loop(
        loaded, sampling_params("precise", seed=0), input_stream=io.StringIO("hi\nand you?\n"), output_stream=output
    )
    text = output.getvalue()
    assert "Error" not in text, text
    assert [m["role"] for m in session.transcript] == ["user", "assistant", "user", "assistant"]
    assert text.count("the default reply length is capped") == 1
    chosen = chat_loop(
        loaded, sampling_params(max_new_tokens=64), input_stream=io.StringIO("hi\n"), output_stream=io.StringIO()
    )
    assert chosen.history == []  # a length the user asked for that cannot fit is still refused


def test_save_writes_the_whole_conversation_as_it_happened(loaded, tmp_path):
    """Turns dropped from the context and a /system set mid-way are saved as they happened."""
    from lmforge.data.load import load_data

    turn = "the quick brown fox " * 20  # ~100 tokens: each new turn drops the older ones from the context
    target = tmp_path / "chats.jsonl"
    session, output = _run(
        loaded, f"first {turn}\n/system Be brief.\nsecond {turn}\nthird {turn}\n/save {target}\n", system="Be kind."
    )
    assert "dropped the" in output
    saved = json.loads(target.read_text())["messages"]
    assert [m["role"] for m in saved] == [
        "system",
        "user",
        "assistant",
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m["content"] for m in saved if m["role"] == "system"] == ["Be kind.", "Be brief."]
    assert [m["content"][:5] for m in saved if m["role"] == "user"] == ["first", "secon", "third"]
    assert len(session.history) < 6 and f"saved {len(saved)} messages" in output
    # Set before any turn, a new system prompt replaces the unused one, so the record stays trainable data.
    other = tmp_path / "other.jsonl"
    _run(loaded, f"/system Be brief.\nhello\n/save {other}\n", system="Be kind.")
    assert load_data(str(other)).dataset[0]["messages"][0] == {"role": "system", "content": "Be brief."}
