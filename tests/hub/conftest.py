"""A local Hugging Face Hub on 127.0.0.1: the endpoints the real huggingface_hub client calls (model info, the
recursive tree listing, HEAD and GET with Range on /resolve/), serving repos built here from the tiny Llama.

The real client reaches it through HF_ENDPOINT. Every request is logged, so a test can say what was fetched
and that an offline run asked nothing.
"""

import hashlib
import json
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TOKEN = "hf_local_test_token"


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: bytes}
    token: str | None = None  # gated: 401 unless this bearer token comes with the request


@dataclass
class LocalHub:
    url: str = ""
    cache: Path = Path()
    canary: Path = Path()  # created by any payload that runs: must never exist
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    cut_once: set[tuple[str, str]] = field(default_factory=set)  # (repo, file): drop the first GET halfway

    def add(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main", token: str | None = None) -> str:
        digest = hashlib.sha1(repo_id.encode() + branch.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo(token=token))
        repo.commits[commit] = files
        repo.branches[branch] = commit
        return commit

    def fetched(self, repo_id: str) -> set[str]:
        """The files of `repo_id` whose bytes were sent (GET /resolve/)."""
        marker = f"/{repo_id}/resolve/"
        return {
            path.split(marker, 1)[1].split("/", 1)[1]
            for method, path, _ in self.requests
            if method == "GET" and marker in path
        }


class HubReply(Exception):
    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


def create_app(hub: LocalHub) -> Any:
    """The hub's answers, as huggingface_hub reads them (its errors come from the X-Error-Code header)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    app = FastAPI()

    @app.middleware("http")
    async def log(request: Request, call_next: Any) -> Any:
        hub.requests.append((request.method, request.url.path, request.headers.get("range")))
        return await call_next(request)

    @app.exception_handler(HubReply)
    async def reply(_: Request, error: HubReply) -> Any:
        headers = {"X-Error-Code": error.code, "X-Error-Message": error.message}
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    def revision_of(request: Request, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        repo = hub.repos.get(repo_id)
        if repo is None:  # as the hub does: 401 for a repo that does not exist or that this caller may not see
            raise HubReply(401, "RepoNotFound", "Repository not found")
        if repo.token and request.headers.get("authorization") != f"Bearer {repo.token}":
            raise HubReply(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it "
                "and be authenticated to access it. Please log in.",
            )
        commit = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            raise HubReply(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit, repo.commits[commit]

    def info(request: Request, org: str, name: str, revision: str) -> dict[str, Any]:
        repo_id = f"{org}/{name}"
        commit, files = revision_of(request, repo_id, revision)
        return {
            "_id": commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": False,
            "gated": "manual" if hub.repos[repo_id].token else False,
            "disabled": False,
            "tags": [],
            "lastModified": "2025-01-01T00:00:00.000Z",
            "siblings": [
                {"rfilename": path, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                for path, data in sorted(files.items())
            ],
        }

    @app.get("/api/models/{org}/{name}")
    def model_info(request: Request, org: str, name: str) -> Any:
        return info(request, org, name, "main")

    @app.get("/api/models/{org}/{name}/revision/{revision}")
    def model_info_at(request: Request, org: str, name: str, revision: str) -> Any:
        return info(request, org, name, revision)

    @app.get("/api/models/{org}/{name}/tree/{revision}")
    def tree(request: Request, org: str, name: str, revision: str) -> Any:
        _, files = revision_of(request, f"{org}/{name}", revision)
        return [
            {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for path, data in sorted(files.items())
        ]

    @app.api_route("/{org}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve(request: Request, org: str, name: str, revision: str, path: str) -> Any:
        repo_id = f"{org}/{name}"
        commit, files = revision_of(request, repo_id, revision)
        if path not in files:
            raise HubReply(404, "EntryNotFound", f"{path} does not exist on {revision}", commit=commit)
        data = files[path]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        start = int(request.headers.get("range", "bytes=0-").removeprefix("bytes=").split("-")[0] or 0)
        status = 200
        if start:
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(data) - start)
        if request.method == "HEAD":
            return Response(status_code=200, headers={**headers, "Content-Length": str(len(data))})
        if (repo_id, path) in hub.cut_once and not start:
            hub.cut_once.discard((repo_id, path))

            def half_then_drop() -> Iterator[bytes]:
                yield data[: len(data) // 2]
                raise ConnectionResetError("the local hub drops this transfer halfway, once")

            return StreamingResponse(half_then_drop(), status_code=200, headers=headers)
        return Response(data[start:], status_code=status, headers=headers)

    return app


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


class Payload:
    """Unpickling this calls os.makedirs(canary): the file a live payload would leave behind."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.makedirs, (self.canary,))


def build_repos(hub: LocalHub, tiny_llama_dir: Path, scratch: Path) -> None:
    """org/tiny (main, and a one-layer v1 branch), org/tiny-both (+ pickle duplicates), org/evil (a live pickle
    payload only), org/gated (401 without TOKEN), org/remote-code (its own Python, which would leave the canary),
    org/tiny-lora (an adapter over org/tiny), org/gguf-only and org/no-weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    tiny = _folder_files(tiny_llama_dir)
    readme = {"README.md": b"# a tiny test model\n"}
    hub.add("org/tiny", {**tiny, **readme})
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.num_hidden_layers = 1
    torch.manual_seed(5)
    LlamaForCausalLM(config).save_pretrained(scratch / "v1")
    hub.add("org/tiny", {**tiny, **_folder_files(scratch / "v1"), **readme}, branch="v1")

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.save(model.state_dict(), scratch / "pytorch_model.bin")
    tokenizer_files = {name: data for name, data in tiny.items() if "safetensors" not in name}
    hub.add(
        "org/tiny-both",
        {
            **tiny,
            "pytorch_model.bin": (scratch / "pytorch_model.bin").read_bytes(),
            "original/consolidated.00.pth": (scratch / "pytorch_model.bin").read_bytes(),
            "training_args.bin": pickle.dumps(Payload(hub.canary)),
        },
    )
    torch.save({"model.embed_tokens.weight": Payload(hub.canary)}, scratch / "evil.bin")
    hub.add("org/evil", {**tokenizer_files, "pytorch_model.bin": (scratch / "evil.bin").read_bytes()})
    hub.add("org/gated", tiny, token=TOKEN)

    remote = json.loads(tiny["config.json"])
    remote.update(
        model_type="evilarch",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    )
    code = f"import os\nos.makedirs({str(hub.canary)!r})\n".encode()
    hub.add(
        "org/remote-code",
        {**tiny, "config.json": json.dumps(remote).encode(), "configuration_evil.py": code, "modeling_evil.py": code},
    )

    torch.manual_seed(1)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(scratch / "lora")
    adapter_config = json.loads((scratch / "lora" / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = "org/tiny"
    (scratch / "lora" / "adapter_config.json").write_text(json.dumps(adapter_config))
    hub.add("org/tiny-lora", _folder_files(scratch / "lora"))

    hub.add("org/gguf-only", {**readme, "tiny-Q4_K_M.gguf": b"GGUF" + bytes(60), "tiny-Q8_0.gguf": b"GGUF" + bytes(60)})
    hub.add("org/no-weights", {**readme, "config.json": tiny["config.json"]})


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[LocalHub]:
    """The hub server (one per test session and worker), its repos, and the one cache every hub test shares."""
    from tests.serve.conftest import run_server

    root = tmp_path_factory.mktemp("local-hub")
    hub = LocalHub(cache=root / "cache", canary=root / "canary-payload-ran")
    build_repos(hub, tiny_llama_dir, root / "scratch")
    shutil.rmtree(root / "scratch")
    with run_server(create_app(hub)) as (url, _):
        hub.url = url
        yield hub


@pytest.fixture
def online(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """The local hub as HF_ENDPOINT and its cache as HF_HUB_CACHE, downloads allowed, no token and no stored
    login; no payload may have run by the end of the test. huggingface_hub reads HF_HUB_OFFLINE once, at import
    (the suite's conftest set it), so its frozen copy is set to match; lmforge reads the environment at each call."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(local_hub.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(local_hub.cache / "no-stored-login"))
    yield local_hub
    assert not local_hub.canary.exists(), "a payload from the hub ran"


@pytest.fixture
def go_offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call to set HF_HUB_OFFLINE=1 mid-test, after an online pass filled the cache."""
    import huggingface_hub.constants as constants

    def offline() -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    return offline
