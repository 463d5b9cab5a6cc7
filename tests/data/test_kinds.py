import pytest

from lmforge.data.kinds import (
    Kind,
    RecordProblem,
    apply_columns,
    detect_layout,
    normalise_record,
    parse_columns,
    resolve_format,
    to_format,
)
from lmforge.errors import UserInputError


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["text"], "text"),
        (["instruction", "input", "output"], "alpaca"),
        (["conversations"], "sharegpt"),
        (["messages"], "messages"),
        (["prompt", "chosen", "rejected"], "preference"),
        (["chosen", "rejected"], "preference"),
        (["prompt", "completion", "label"], "unpaired_preference"),
        (["text", "label"], "classification"),
        (["text", "text_pair", "label"], "classification"),
    ],
)
def test_detects_every_layout_from_columns(columns, expected):
    assert detect_layout(columns) == expected


def test_undetectable_columns_say_how_to_fix():
    with pytest.raises(UserInputError, match=r"\[answer, question\].*--columns"):
        detect_layout(["question", "answer"])


def test_forced_kind_accepts_layouts_and_kind_names():
    assert resolve_format("chat") == "chat"  # any chat layout, detected by the loader
    assert resolve_format(Kind.PREFERENCE) == "preference"
    assert resolve_format("unpaired-preference") == "unpaired_preference"
    with pytest.raises(UserInputError, match="unknown data kind 'tabular'"):
        resolve_format("tabular")


def test_alpaca_becomes_system_history_and_one_user_turn():
    record = {"instruction": "Reverse", "input": "abc", "output": "cba", "system": "Be terse.",
              "history": [["hi", "hello"]]}  # fmt: skip
    assert normalise_record(record, "alpaca")["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Reverse\nabc"},
        {"role": "assistant", "content": "cba"},
    ]


def test_sharegpt_roles_map_to_canonical_roles():
    record = {"conversations": [
        {"from": "system", "value": "tools on"}, {"from": "human", "value": "weather?"},
        {"from": "function_call", "value": "{\"name\": \"w\"}"}, {"from": "observation", "value": "sunny"},
        {"from": "gpt", "value": "It is sunny."},
    ]}  # fmt: skip
    roles = [m["role"] for m in normalise_record(record, "sharegpt")["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]


def test_messages_with_top_level_system_column():
    record = {"system": "S", "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    assert normalise_record(record, "messages")["messages"][0] == {"role": "system", "content": "S"}


def test_plain_preference_is_wrapped_into_conversations():
    out = normalise_record({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "preference")
    assert out == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }


def test_implicit_prompt_preference_splits_at_the_last_user_turn():
    user = {"role": "user", "content": "q"}
    out = normalise_record(
        {
            "chosen": [user, {"role": "assistant", "content": "good"}],
            "rejected": [user, {"role": "assistant", "content": "bad"}],
        },
        "preference",
    )
    assert out["prompt"] == [user]
    assert out["chosen"][0]["content"] == "good" and out["rejected"][0]["content"] == "bad"


def test_implicit_prompts_that_differ_are_rejected():
    chosen = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}]
    rejected = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(RecordProblem) as problem:
        normalise_record({"chosen": chosen, "rejected": rejected}, "preference")
    assert problem.value.reason == "chosen and rejected prompts differ"


def test_unpaired_preference_labels_from_strings_and_ints():
    assert normalise_record({"prompt": "p", "completion": "c", "label": "true"}, "unpaired_preference")["label"] is True
    assert normalise_record({"prompt": "p", "completion": "c", "label": 0}, "unpaired_preference")["label"] is False
    with pytest.raises(RecordProblem, match="must be true or false"):
        normalise_record({"prompt": "p", "completion": "c", "label": "maybe"}, "unpaired_preference")


def test_classification_keeps_pairs_and_reads_digit_labels_as_ids():
    out = normalise_record({"text": "a", "text_pair": "b", "label": "1"}, "classification")
    assert out == {"text": "a", "text_pair": "b", "label": 1}
    assert normalise_record({"text": "a", "label": "pos"}, "classification")["text_pair"] is None


@pytest.mark.parametrize(
    ("record", "fmt", "reason", "detail"),
    [
        ({"instruction": "x"}, "alpaca", "missing field", "missing field 'output'"),
        ({"instruction": " ", "output": "y"}, "alpaca", "empty field", "empty field 'instruction'"),
        ({"text": 5}, "text", "wrong type", "'text' must be a string, got a number"),
        ({"messages": "hi"}, "messages", "wrong type", "must be a list of messages"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "messages", "roles out of order",
         "message 1 is assistant first"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages",
         "roles out of order", "message 2 is user after user"),
        ({"messages": [{"role": "user", "content": "a"}]}, "messages",
         "conversation does not end with the assistant", "ends with a user turn"),
        ({"messages": [{"role": "wizard", "content": "a"}]}, "messages", "unknown role", "unknown role 'wizard'"),
        ({"text": "t", "label": -1}, "classification", "label not in the label set", "negative"),
        ([1, 2], "text", "not a JSON object", "got list"),
    ],
)  # fmt: skip
def test_bad_records_name_the_reason(record, fmt, reason, detail):
    with pytest.raises(RecordProblem) as problem:
        normalise_record(record, fmt)
    assert problem.value.reason == reason
    assert detail in str(problem.value)


def test_column_mapping_renames_and_names_the_users_column_in_errors():
    mapping = parse_columns("instruction=question, output=answer")
    assert mapping == {"instruction": "question", "output": "answer"}
    record = apply_columns({"question": "q", "answer": "a"}, mapping)
    assert detect_layout(record) == "alpaca"
    with pytest.raises(RecordProblem, match=r"missing field 'answer' \(mapped to 'output'\)"):
        normalise_record(apply_columns({"question": "q"}, mapping), "alpaca", mapping)


@pytest.mark.parametrize("spec", ["instruction", "colour=question", "output="])
def test_bad_column_mappings_are_user_errors(spec):
    with pytest.raises(UserInputError):
        parse_columns(spec)


def test_alpaca_messages_alpaca_round_trip():
    original = {"system": "S", "instruction": "last", "input": "", "output": "answer", "history": [["q1", "a1"]]}
    canonical = normalise_record(original, "alpaca")
    assert to_format(canonical, Kind.CHAT, "alpaca") == original
    sharegpt = to_format(canonical, Kind.CHAT, "sharegpt")
    assert normalise_record(sharegpt, "sharegpt") == canonical


def test_cannot_convert_across_kinds():
    with pytest.raises(UserInputError, match="cannot write preference data as alpaca"):
        to_format({"prompt": [], "chosen": [], "rejected": []}, Kind.PREFERENCE, "alpaca")
