"""The overview paragraph at the top of each page: written by the language model when one is
configured (``SHOPSTREAM_LLM``), from the page's facts only, and deterministic otherwise.

A model's answer is kept in ``<data_dir>/docs-cache/<sha256 of the prompt>.json``: a rebuild
with the same facts asks nothing and writes the same bytes. A sentence carrying a number the
facts do not hold is dropped (:mod:`shopstream.genai.grounding`); when the model fails, or
nothing grounded is left, the deterministic paragraph stands in (not cached, so the next
build asks again).

>>> Subject("pipelines/cdc", "pipeline cdc", ("It writes raw.cdc_<table>.",), "CDC.").prompt()
'Subject: pipeline cdc\\nFacts:\\n- It writes raw.cdc_<table>.'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from shopstream.config import Settings
    from shopstream.genai.llm import ChatModel

log = logging.getLogger(__name__)

CACHE_DIR = "docs-cache"
SYSTEM = (
    "You write the documentation of a data platform for the engineers who run it. Given a "
    "subject (a pipeline, a table or the whole platform) and facts about it, write ONE "
    "overview paragraph of 2 to 5 sentences: what it is for, where its data comes from and "
    "goes, and what watches it. Use only the facts given: no number, table, column, setting "
    "or tool that is not in them. Plain prose, no Markdown headings, no lists. Answer JSON "
    'only: {"overview": "<the paragraph>"}'
)


class Overview(BaseModel):
    overview: str = Field(min_length=1, max_length=4_000)


@dataclass(frozen=True)
class Subject:
    """One page's overview to write: its ``key`` (the page), what it is about, its facts, and
    the deterministic paragraph."""

    key: str
    title: str
    facts: tuple[str, ...]
    fallback: str

    def prompt(self) -> str:
        return f"Subject: {self.title}\nFacts:\n" + "\n".join(f"- {f}" for f in self.facts)


@dataclass(frozen=True)
class Overviews:
    #: Subject key -> its paragraph.
    text: dict[str, str]
    #: Who wrote them: ``deterministic`` or ``llm:<provider>:<model>``.
    author: str
    #: Subjects the model was asked about now (not answered from the cache).
    asked: int = 0
    #: Why some fell back to the deterministic paragraph, one line each.
    fallbacks: tuple[str, ...] = ()


def write_overviews(
    subjects: Sequence[Subject],
    settings: Settings,
    emit: Callable[[str], None] = lambda _: None,
) -> Overviews:
    from shopstream.genai.llm import build_chat_model

    model = build_chat_model(settings)
    if model is None:
        return Overviews({s.key: s.fallback for s in subjects}, "deterministic")
    cache = settings.data_dir / CACHE_DIR
    text: dict[str, str] = {}
    asked = 0
    fallbacks: list[str] = []
    for subject in subjects:
        path = cache / f"{_prompt_hash(model, subject)}.json"
        cached = _cached(path)
        if cached is not None:
            text[subject.key] = cached
            continue
        emit(f"asking {model.analyst} about {subject.title}")
        asked += 1
        written, why = _ask(model, subject)
        if written is None:
            fallbacks.append(f"{subject.title}: {why}")
            text[subject.key] = subject.fallback
            continue
        _store(path, written)
        text[subject.key] = written
    return Overviews(text, model.analyst, asked, tuple(fallbacks))


def _prompt_hash(model: ChatModel, subject: Subject) -> str:
    document = {"model": model.analyst, "system": SYSTEM, "user": subject.prompt()}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _ask(model: ChatModel, subject: Subject) -> tuple[str | None, str]:
    from shopstream.genai.grounding import NumberPool, sentences
    from shopstream.genai.llm import LLMFailure, ask_json

    try:
        answer = ask_json(model, SYSTEM, subject.prompt(), Overview)
    except LLMFailure as exc:
        return None, exc.reason
    pool = NumberPool()
    pool.add_text(subject.prompt())
    kept = [s for s in sentences(answer.value.overview) if not pool.invented(s)]
    if not kept:
        return None, "every sentence of the answer held a number the facts do not"
    return " ".join(" ".join(s.split()) for s in kept), ""


def _cached(path: Path) -> str | None:
    try:
        return Overview.model_validate_json(path.read_bytes()).overview
    except (OSError, ValueError):
        return None


def _store(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_text(Overview(overview=text).model_dump_json())
    os.replace(draft, path)


__all__ = ["CACHE_DIR", "SYSTEM", "Overview", "Overviews", "Subject", "write_overviews"]
