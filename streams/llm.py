"""LLM fields of an ``openai``-protocol inference: pure functions of already-parsed bodies.

:func:`streams.enrich.sniff` decides the protocol and parses the body once; when it is ``openai`` it calls
:func:`from_request` (the request's JSON object), :func:`from_response` (a non-streamed response object) or
:func:`from_stream` (the JSON chunks of a concatenated SSE response, in order, ``[DONE]`` already dropped).
Nothing here parses bytes, reads a clock or does I/O, so the record stays a pure function of the events.

Text forms (deterministic, each cut to :data:`MAX_TEXT` characters):

- **prompt, chat** (``messages``): one line per message, ``"<role>: <content>"``, lines joined by ``"\\n"``.
  A string content is written as is (its own newlines kept); a list of content parts gives its ``text`` parts
  joined by ``"\\n"`` and ``[<type>]`` for any other part (``[image_url]``); a null content gives nothing after
  ``": "``; each tool call of the message is appended as `` [tool_call <name>(<arguments>)]``; a message that is
  not an object is skipped, a missing role is written ``?``.
- **prompt, completions** (``prompt``): a string as is, a list of strings joined by ``"\\n"``; token-id prompts
  (lists of ints) have no text (null).
- **completion**: choice 0's ``message.content`` (chat) or ``text`` (completions); in a stream, the string
  ``delta.content`` / ``text`` pieces of choice 0 concatenated in order (null if no piece was a string: a
  tool-call-only answer). Choice 0 is the choice whose ``index`` is 0 (a choice without ``index`` counts by its
  position in its list).
- **finish_reason**: choice 0's; in a stream, the last non-null one.
- **choices**: ``len(choices)``; in a stream, the number of distinct choice indexes seen (null if no chunk
  carried a choice).
- **tokens**: ``usage.prompt_tokens`` / ``completion_tokens`` / ``total_tokens`` of the body, or of the last
  chunk with a ``usage`` object (``stream_options.include_usage``); each null when absent or not an integer.

Null wherever the body does not say. A chunk that is not a JSON object is ignored here; a stream with a
chunk that is not JSON at all never reaches this module (the sniff marks the body unparseable instead and the
record keeps the raw body, with the LLM fields null).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 16 * 1024
"""Characters kept of the prompt and of the completion text (the raw bodies keep everything)."""


@dataclass(frozen=True)
class LlmInfo:
    """The LLM fields one body tells (a request only ``prompt``, a response the others)."""

    prompt: str | None = None
    completion: str | None = None
    finish_reason: str | None = None
    choices: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


EMPTY = LlmInfo()


def _cap(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT]


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{_compact(part.get('type', '?'))}]")
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return _compact(content)


def _message_line(msg: dict[str, Any]) -> str:
    role = msg.get("role")
    line = f"{_compact(role) if role is not None else '?'}: {_content_text(msg.get('content'))}"
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                args = fn.get("arguments")
                line += f" [tool_call {_compact(fn.get('name', '?'))}({'' if args is None else _compact(args)})]"
    return line


def prompt_text(obj: dict[str, Any]) -> str | None:
    """The prompt of a chat or completions request object, in the text form of the module doc."""
    messages = obj.get("messages")
    if isinstance(messages, list):
        return _cap("\n".join(_message_line(m) for m in messages if isinstance(m, dict)))
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        return _cap(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return _cap("\n".join(prompt))
    return None


def from_request(obj: dict[str, Any]) -> LlmInfo:
    prompt = prompt_text(obj)
    return EMPTY if prompt is None else LlmInfo(prompt=prompt)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(usage: Any) -> tuple[int | None, int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None, None
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), _int(usage.get("total_tokens"))


def _indexed(choices: list[Any]) -> Iterable[tuple[Any, dict[str, Any]]]:
    for pos, choice in enumerate(choices):
        if isinstance(choice, dict):
            yield choice.get("index", pos), choice


def _piece(choice: dict[str, Any], key: str) -> Any:
    """``choice[key].content`` (chat: ``message`` / ``delta``), else ``choice.text`` (completions)."""
    inner = choice.get(key)
    if isinstance(inner, dict):
        return inner.get("content")
    return choice.get("text")


def from_response(obj: dict[str, Any]) -> LlmInfo:
    """A non-streamed chat or completions response object."""
    prompt_tokens, completion_tokens, total_tokens = _usage(obj.get("usage"))
    choices = obj.get("choices")
    completion = finish = None
    count = None
    if isinstance(choices, list):
        count = len(choices)
        first = next((c for i, c in _indexed(choices) if i == 0), None)
        if first is not None:
            completion = _str(_piece(first, "message"))
            finish = _str(first.get("finish_reason"))
    return LlmInfo(None, _cap(completion), finish, count, prompt_tokens, completion_tokens, total_tokens)


def from_stream(chunks: Iterable[Any]) -> LlmInfo:
    """The parsed ``data:`` chunks of a streamed response, in order (non-objects ignored)."""
    pieces: list[str] = []
    seen: set[Any] = set()
    finish: str | None = None
    usage: Any = None
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            continue
        for index, choice in _indexed(choices):
            seen.add(index if isinstance(index, int | str) else _compact(index))
            if index != 0:
                continue
            piece = _piece(choice, "delta")
            if isinstance(piece, str):
                pieces.append(piece)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                finish = reason
    prompt_tokens, completion_tokens, total_tokens = _usage(usage)
    completion = _cap("".join(pieces)) if pieces else None
    return LlmInfo(None, completion, finish, len(seen) or None, prompt_tokens, completion_tokens, total_tokens)
