"""An OpenAI-compatible chat server on 127.0.0.1 with scripted answers.

It stands in for a remote model (OpenAI, a vLLM or Ollama host), which cannot be reached from
here: the client side (LangChain's ChatOpenAI, the openai SDK, httpx) runs for real over real
HTTP, and the test scripts what "the model" answers: a JSON report, prose, an error status, or
nothing for longer than the client's timeout. Every request is recorded so a test can check what
reached the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.collector import free_port


@dataclass
class Reply:
    """One scripted answer of the model."""

    content: str = ""
    #: Seconds the server waits before answering (beyond the client's timeout: a timeout).
    delay: float = 0.0
    #: A non-200 status answers an OpenAI-style error instead.
    status: int = 200
    error: str = "scripted failure"
    prompt_tokens: int = 1_200
    completion_tokens: int = 300
    #: "length": the answer was cut off at the client's output limit.
    finish_reason: str = "stop"


@dataclass
class Received:
    body: dict[str, Any]
    authorization: str

    @property
    def text(self) -> str:
        """All message contents, joined: what the model was told."""
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


class ChatServer:
    """The server and its script; ``url`` is what ``genai.base_url`` takes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.app = self._app()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def script(self, *replies: Reply) -> None:
        """Replace the script and forget earlier requests."""
        with self._lock:
            self.replies = deque(replies)
            self.received = []

    def _next(self) -> Reply:
        with self._lock:
            if not self.replies:
                return Reply(status=500, error="the test scripted no more answers")
            return self.replies.popleft()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "test-model", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                self.received.append(Received(body, request.headers.get("authorization", "")))
            reply = self._next()
            # Wait as long as scripted, or until the client gives up (its timeout) and hangs up.
            until = time.monotonic() + reply.delay
            while time.monotonic() < until and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            if reply.status != 200:
                # The error echoes the Authorization header, as a careless proxy might: the
                # client's failure reason must not carry the key on.
                echo = request.headers.get("authorization", "")
                return JSONResponse(
                    {"error": {"message": f"{reply.error} ({echo})", "type": "server_error"}},
                    status_code=reply.status,
                )
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(self.received)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "test-model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": reply.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                    },
                }
            )

        return app

    def start(self) -> ChatServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the test chat server did not start in 10 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()
