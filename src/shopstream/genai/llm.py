"""The one place that builds a chat model from settings, calls it, and accounts for the call.

``SHOPSTREAM_LLM`` picks the model as ``provider:model``:

- ``google_genai:gemini-2.5-flash``: Gemini through langchain-google-genai (key from
  ``genai.api_key`` or ``GOOGLE_API_KEY``);
- ``openai:<model>``: OpenAI, or any OpenAI-compatible server (Ollama, vLLM, llama.cpp) at
  ``genai.base_url`` (key from ``genai.api_key`` or ``OPENAI_API_KEY``; local servers take any);
- empty: no model (the callers' deterministic paths answer).

Structured answers are asked for as JSON and validated by Pydantic after parsing (JSON mode where
the provider has it) rather than through tool calling: small local servers (llama.cpp) often have
no tool calling, and parse-then-validate says precisely what was wrong with an answer.

LangChain and the providers' SDKs are imported only when a model is built: with no model
configured, none of them is loaded.

>>> parse_llm("google_genai:gemini-2.5-flash")
('google_genai', 'gemini-2.5-flash')
>>> parse_llm("") is None
True
>>> try:
...     parse_llm("anthropic:claude")
... except LLMConfigError as exc:
...     print(str(exc).partition(": use ")[0])
unknown LLM provider 'anthropic' in 'anthropic:claude'
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from langchain_core.language_models.chat_models import BaseChatModel

    from shopstream.config import GenAISettings, Settings

PROVIDERS: dict[str, str] = {
    "google_genai": "google_genai:<model> (e.g. google_genai:gemini-2.5-flash)",
    "openai": "openai:<model> (with genai.base_url for Ollama, vLLM or llama.cpp servers)",
}
ACCEPTED = " or ".join(PROVIDERS.values()) + ", or leave SHOPSTREAM_LLM empty for no LLM"

Answer = TypeVar("Answer", bound=BaseModel)


class LLMConfigError(ValueError):
    """SHOPSTREAM_LLM names no model we can build; the message lists the accepted forms."""


class LLMFailure(Exception):
    """A model call that gave no usable answer: timed out, failed, malformed or off-schema."""

    def __init__(self, reason: str, usage: Usage | None = None, text: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage or Usage()
        #: The answer as received, when there was one (for the log; never has the key).
        self.text = text


class Usage(BaseModel):
    """What one model call cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0


def parse_llm(value: str) -> tuple[str, str] | None:
    """``provider:model`` -> (provider, model); empty -> None; anything else -> LLMConfigError."""
    value = value.strip()
    if not value:
        return None
    provider, sep, model = value.partition(":")
    provider, model = provider.strip(), model.strip()
    if not sep or not model:
        raise LLMConfigError(f"SHOPSTREAM_LLM={value!r} names no model: use {ACCEPTED}")
    if provider not in PROVIDERS:
        raise LLMConfigError(f"unknown LLM provider {provider!r} in {value!r}: use {ACCEPTED}")
    return provider, model


@dataclass
class ChatModel:
    """A built chat model and what is needed to call and account for it."""

    provider: str
    model: str
    chat: BaseChatModel
    genai: GenAISettings

    @property
    def analyst(self) -> str:
        """How a report names its author: ``llm:<provider>:<model>``."""
        return f"llm:{self.provider}:{self.model}"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        g = self.genai
        return (
            input_tokens * g.input_cost_per_million_tokens
            + output_tokens * g.output_cost_per_million_tokens
        ) / 1_000_000


def build_chat_model(settings: Settings) -> ChatModel | None:
    """The chat model SHOPSTREAM_LLM names, or None when it is empty."""
    parsed = parse_llm(settings.llm)
    if parsed is None:
        return None
    provider, model = parsed
    g = settings.genai
    try:
        chat = _gemini(model, g) if provider == "google_genai" else _openai(model, g)
    except LLMConfigError:
        raise
    except Exception as exc:  # the SDKs refuse at construction (no API key, bad option)
        raise LLMConfigError(
            f"cannot build {provider}:{model}: {_construction_error(exc, g)}"
        ) from None
    return ChatModel(provider, model, chat, g)


def _construction_error(exc: Exception, g: GenAISettings) -> str:
    # A ValidationError's text echoes its input (the key among it): its messages only.
    if isinstance(exc, ValidationError):
        text = "; ".join(str(e["msg"]) for e in exc.errors())
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = _without_key(text, g)
    if "api key" in text.lower() or "api_key" in text.lower():
        text += " (set SHOPSTREAM_GENAI__API_KEY, or the provider's own variable)"
    return text


def _without_key(text: str, g: GenAISettings) -> str:
    key = g.api_key.get_secret_value() if g.api_key is not None else ""
    return text.replace(key, "***") if key else text


def _gemini(model: str, g: GenAISettings) -> BaseChatModel:
    try:
        from langchain_google_genai import ChatGoogleGenerativeAI
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise LLMConfigError(f"google_genai needs langchain-google-genai: {exc}") from None
    options: dict[str, Any] = {
        "model": model,
        "temperature": g.temperature,
        "max_output_tokens": g.max_output_tokens,
        "timeout": g.timeout_seconds,
        "max_retries": g.max_retries,
        # JSON mode: Gemini answers with a JSON document, validated after parsing.
        "response_mime_type": "application/json",
    }
    if g.api_key is not None:
        options["google_api_key"] = g.api_key
    return ChatGoogleGenerativeAI(**options)


def _openai(model: str, g: GenAISettings) -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise LLMConfigError(f"openai needs langchain-openai: {exc}") from None
    options: dict[str, Any] = {
        "model": model,
        "temperature": g.temperature,
        "max_tokens": g.max_output_tokens,
        "timeout": g.timeout_seconds,
        "max_retries": g.max_retries,
        # Usage comes in the answer's metadata; no streaming.
        "stream_usage": False,
    }
    if g.base_url:
        options["base_url"] = g.base_url
        # ChatOpenAI sends the limit as max_completion_tokens, which llama.cpp's server (and
        # older vLLM and Ollama) ignore: a small model then writes until its context is full.
        options["extra_body"] = {"max_tokens": g.max_output_tokens}
    if g.api_key is not None:
        options["api_key"] = g.api_key
    elif g.base_url:
        # Ollama, vLLM and llama.cpp accept any key, but the OpenAI client insists on one:
        # a placeholder, so a local server works without OPENAI_API_KEY.
        options["api_key"] = os.environ.get("OPENAI_API_KEY") or "not-needed"
    return ChatOpenAI(**options)


@dataclass
class Structured(Generic[Answer]):
    """A validated answer and what it cost."""

    value: Answer
    usage: Usage
    text: str


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)


def json_document(text: str) -> Any:
    """The JSON object in a model's answer (code fences and chatter around it ignored).

    >>> json_document('Sure! ```json\\n{"a": 1}\\n``` Hope it helps.')
    {'a': 1}
    """
    stripped = _FENCE.sub("", text.strip())
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if start < 0 or end <= start:
            raise
        return json.loads(stripped[start : end + 1])


def ask_json(model: ChatModel, system: str, user: str, schema: type[Answer]) -> Structured[Answer]:
    """Ask for a JSON answer of ``schema``; LLMFailure says why when there is no valid one."""
    from langchain_core.messages import HumanMessage, SystemMessage

    chat: Any = model.chat
    if model.provider == "openai" and model.genai.json_mode:
        # JSON mode: servers that have it (OpenAI, vLLM, Ollama, llama.cpp) constrain the answer
        # to JSON; the schema itself is in the prompt and checked here.
        chat = chat.bind(response_format={"type": "json_object"})
    started = time.monotonic()
    try:
        message = chat.invoke([SystemMessage(content=system), HumanMessage(content=user)])
    except Exception as exc:  # any provider error: the caller falls back
        seconds = time.monotonic() - started
        cut = _cut_off(exc)
        if cut is not None:
            # The SDK refuses a JSON-mode answer that hit the output limit; it was paid for.
            usage = Usage(
                input_tokens=cut[0],
                output_tokens=cut[1],
                cost=model.cost(*cut),
                seconds=round(seconds, 3),
            )
            limit = model.genai.max_output_tokens
            reason = f"malformed answer: cut off at the output limit ({limit} tokens)"
            raise LLMFailure(reason, usage) from exc
        usage = Usage(seconds=round(seconds, 3))
        raise LLMFailure(_failure(exc, model), usage) from exc
    seconds = time.monotonic() - started
    usage = _usage(model, message, seconds)
    text = _text(message.content)
    try:
        document = json_document(text)
    except json.JSONDecodeError as exc:
        raise LLMFailure(f"malformed answer: not JSON ({exc.msg})", usage, text) from None
    try:
        value = schema.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise LLMFailure(f"off-schema answer: {problems}", usage, text) from None
    return Structured(value, usage, text)


def _usage(model: ChatModel, message: Any, seconds: float) -> Usage:
    meta = getattr(message, "usage_metadata", None) or {}
    tokens_in = int(meta.get("input_tokens") or 0)
    tokens_out = int(meta.get("output_tokens") or 0)
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost=model.cost(tokens_in, tokens_out),
        seconds=round(seconds, 3),
    )


def _cut_off(exc: BaseException) -> tuple[int, int] | None:
    """(input, output) tokens of an answer the openai SDK refused for hitting the length limit."""
    if type(exc).__name__ != "LengthFinishReasonError":
        return None
    usage = getattr(getattr(exc, "completion", None), "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    return tokens_in, tokens_out


def _text(content: Any) -> str:
    """A message's text: a string, or Gemini's list of parts."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


def _failure(exc: BaseException, model: ChatModel) -> str:
    """Why a call failed, in one line, without the API key."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() for e in chain):
        return f"the model did not answer within {model.genai.timeout_seconds:g} s (timeout)"
    message = _without_key(f"{type(exc).__name__}: {exc}", model.genai)
    if len(message) > 300:
        message = message[:297] + "..."
    return f"the model call failed: {message}"


__all__ = [
    "ACCEPTED",
    "PROVIDERS",
    "ChatModel",
    "LLMConfigError",
    "LLMFailure",
    "Structured",
    "Usage",
    "ask_json",
    "build_chat_model",
    "json_document",
    "parse_llm",
]
