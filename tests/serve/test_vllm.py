"""`--engine vllm`: the same flags handed to vLLM's server, or one clear line when it cannot run."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lmforge.errors import DependencyError
from lmforge.serve.vllm import check_vllm, vllm_command


def test_flags_map_onto_vllm_server_flags():
    command = vllm_command("/models/m", adapters=[("sql", "/a/sql")], host="0.0.0.0", port=9000, api_keys=["k"],
                           cors_origins=["http://x"], served_model_name="m1", max_batch_size=32)
    assert command[1:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]
    joined = " ".join(command)
    for flag in ("--host 0.0.0.0", "--port 9000", "--api-key k", "--served-model-name m1", "--max-num-seqs 32",
                 "--enable-lora --lora-modules sql=/a/sql"):
        assert flag in joined
    assert json.loads(command[command.index("--allowed-origins") + 1]) == ["http://x"]
    with pytest.raises(DependencyError, match="one --api-key"):
        vllm_command("/m", api_keys=["a", "b"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_one_actionable_line():
    with pytest.raises(DependencyError, match="pip install vllm"):
        check_vllm()
