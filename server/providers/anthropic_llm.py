"""Claude through the Anthropic Messages API: streamed replies, two tools, bounded retries.

One ``reply`` is one or more streamed requests: when Claude stops for ``tool_use`` the
tools run here (``lookup_knowledge`` searches the knowledge base, ``notify_host`` appends a
line to the host's inbox) and the results go back for the rest of the reply, at most
``MAX_TOOL_ROUNDS`` times. Text pieces are yielded as they arrive.

Errors become :class:`ProviderError`. The SDK's own retries are off: 429, 529 and
``overloaded_error`` are retried here with backoff, up to ``[llm] max_retries`` times, but
only while nothing of that request has been yielded, so no text is ever repeated. A reply
whose first token does not arrive within ``[llm] first_token_timeout_s`` fails, retryable.

Barge-in: the consumer cancels its task or closes the generator (``contextlib.aclosing``);
the HTTP stream is inside ``async with`` and is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic

try:  # the HTTP library of the SDK: its errors escape from a stream that breaks mid-body
    import httpx2 as sdk_http  # anthropic 2.x
except ImportError:  # pragma: no cover
    import httpx as sdk_http  # type: ignore[no-redef]  # anthropic < 2

from .. import knowledge
from ..config import Config
from ..errors import ProviderError
from .base import LLM, ChatMessage, LLMRequest, ToolUse

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
MAX_TOOL_ROUNDS = 3
INTERRUPTED = "[interrupted by the guest]"
RETRY_BASE_S = 0.25
RETRY_MAX_S = 2.0
READ_TIMEOUT_S = 30.0  # between two pieces of a stream, once it has started
URGENCIES = ("low", "normal", "urgent")
LANGUAGES = {"en": "English", "es": "Spanish"}

PERSONA = """\
You are Sandra, the concierge of a holiday flat in Valencia, talking with a guest on a \
voice call. Everything you write is spoken aloud by a voice synthesiser.
- Be warm and brief: one to three short sentences, plain spoken words. No markdown, no \
lists, no emoji, no URLs or symbols a voice cannot say.
- Answer in the language the guest speaks.
- Use the facts below. If they do not cover a question, use lookup_knowledge; if you \
still do not know, say so and offer to pass the question to the host.
- Use notify_host when the host must act: a problem in the flat, a complaint, a request, \
a late arrival. Use urgency "urgent" for safety problems, leaks, being locked out. Tell \
the guest you have told the host.
- A reply of yours ending in "[interrupted by the guest]" was cut off: the guest heard \
only that part.
"""

TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup_knowledge",
        "description": "Search the flat's knowledge base (check-in, wifi, parking, rules, "
        "neighbourhood, ...) and get the best matching facts.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The guest's question, in a few words."}},
            "required": ["query"],
        },
    },
    {
        "name": "notify_host",
        "description": "Send a message to the flat's host, who reads it on their phone.",
        "input_schema": {
            "type": "object",
            "properties": {
                "message": {
                    "type": "string",
                    "description": "What the host should know or do, in one or two sentences.",
                },
                "urgency": {"type": "string", "enum": list(URGENCIES)},
            },
            "required": ["message"],
        },
    },
]


# --- pure helpers -------------------------------------------------------------------------


def build_messages(history: Sequence[ChatMessage], max_messages: int, max_tokens: int) -> list[dict[str, Any]]:
    """The newest part of ``history`` as Messages API messages.

    Interrupted replies are kept as spoken, marked; empty messages dropped; consecutive
    messages of one role merged; at most ``max_messages`` messages of roughly
    ``max_tokens`` tokens (4 characters each); starting and ending with the user.
    """
    merged: list[dict[str, Any]] = []
    for m in history:
        text = m.text.strip()
        if m.role == "assistant" and m.interrupted:
            text = f"{text} {INTERRUPTED}" if text else INTERRUPTED
        if not text:
            continue
        if merged and merged[-1]["role"] == m.role:
            merged[-1]["content"] += "\n" + text
        else:
            merged.append({"role": m.role, "content": text})
    while merged and merged[-1]["role"] == "assistant":  # no assistant prefill
        merged.pop()
    budget = max(1, max_tokens) * 4
    kept: list[dict[str, Any]] = []
    used = 0
    for message in reversed(merged):
        if len(kept) >= max(1, max_messages) or (kept and used + len(message["content"]) > budget):
            break
        kept.append(message)
        used += len(message["content"])
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    if not kept:
        raise ProviderError("anthropic", "nothing to answer: the history holds no message from the guest")
    if len(kept[-1]["content"]) > budget:  # one huge utterance: keep its end
        kept[-1]["content"] = kept[-1]["content"][-budget:]
    return kept


def system_prompt(kb: knowledge.KnowledgeBase | None, language: str) -> list[dict[str, Any]]:
    text = PERSONA
    name = LANGUAGES.get(language)
    if name:
        text += f"The guest is speaking {name}; answer in {name} unless they switch language.\n"
    if kb is not None:
        text += "\n" + kb.as_prompt(language)
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


# --- provider -----------------------------------------------------------------------------


class AnthropicLLM(LLM):
    name = "anthropic"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._llm = config.llm
        self._api_key = config.secrets.anthropic_api_key
        self._base_url = config.secrets.anthropic_base_url or DEFAULT_BASE_URL
        self._client: anthropic.AsyncAnthropic | None = None
        self._kb: knowledge.KnowledgeBase | None = None

    async def start(self) -> None:
        """Read the knowledge base and build the SDK client (no network: a bad key shows
        on the first turn). Building the client takes tens of ms, which the first
        caller would otherwise wait for before the first token."""
        self._knowledge()
        if self._api_key:
            self._get_client()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def greeting(self, language: str) -> str:
        """The property's own greeting from the knowledge base, once it is loaded."""
        return self._kb.greeting(language) if self._kb is not None else super().greeting(language)

    def _knowledge(self) -> knowledge.KnowledgeBase:
        if self._kb is None:
            self._kb = knowledge.load(self._config.path(self._config.knowledge.file))
        return self._kb

    def _get_client(self) -> anthropic.AsyncAnthropic:
        if not self._api_key:
            raise ProviderError("anthropic", "ANTHROPIC_API_KEY is not set")
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key, base_url=self._base_url, max_retries=0, timeout=READ_TIMEOUT_S
            )
        return self._client

    async def reply(self, request: LLMRequest) -> AsyncIterator[str]:
        client = self._get_client()
        kb = self._knowledge()
        params: dict[str, Any] = {
            "model": self._llm.model,
            "max_tokens": self._llm.max_tokens,
            "system": system_prompt(kb, request.language),
            "messages": build_messages(request.history, self._llm.history_turns, self._llm.history_tokens),
            "tools": TOOLS,
        }
        said = ""
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            if round_no == MAX_TOOL_ROUNDS:
                params["tool_choice"] = {"type": "none"}  # enough tools: answer now
            final = None
            attempt = 0
            while final is None:
                yielded = False
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        deadline = asyncio.get_running_loop().time() + self._llm.first_token_timeout_s
                        stream = await self._open(client, params, stack, deadline)
                        first = True
                        while True:
                            if first:
                                event = await self._first_event(stream, deadline)
                            else:
                                event = await anext(stream, None)
                            if event is None:
                                break
                            if event.type in ("content_block_start", "content_block_delta"):
                                first = False
                            if event.type == "text" and event.text:
                                piece = event.text
                                if not yielded and said and not said[-1].isspace() and not piece[0].isspace():
                                    piece = " " + piece  # a new round continues the same reply
                                said += piece
                                yielded = True
                                yield piece
                        final = await stream.get_final_message()
                        log.debug("anthropic: round %d: %s, usage %s", round_no, final.stop_reason, final.usage)
                except (anthropic.APIError, sdk_http.HTTPError) as exc:
                    error = self._error(exc)
                    if yielded or not error.retryable or attempt >= self._llm.max_retries:
                        raise error from None
                    delay = self._backoff(exc, attempt)
                    log.warning("anthropic: %s; retrying in %.2f s", error, delay)
                    attempt += 1
                    await asyncio.sleep(delay)
            if final.stop_reason != "tool_use":
                if final.stop_reason not in ("end_turn", "stop_sequence"):
                    log.warning("anthropic: reply ended with stop_reason=%s", final.stop_reason)
                return
            params["messages"] = [*params["messages"], *await self._run_tools(final.content, request)]
        log.warning("anthropic: still asking for tools after %d rounds", MAX_TOOL_ROUNDS)

    # --- streaming helpers ---------------------------------------------------------------

    async def _open(self, client: anthropic.AsyncAnthropic, params: dict[str, Any],
                    stack: contextlib.AsyncExitStack, deadline: float) -> Any:
        """The opened ``AsyncMessageStream`` (its own async iterator of events)."""
        try:
            async with asyncio.timeout_at(deadline):
                stream = await stack.enter_async_context(client.messages.stream(**params))
        except TimeoutError:
            raise self._timeout() from None
        return stream

    async def _first_event(self, stream: Any, deadline: float) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                return await anext(stream, None)
        except TimeoutError:
            raise self._timeout() from None

    def _timeout(self) -> ProviderError:
        return ProviderError(
            "anthropic", f"no first token within {self._llm.first_token_timeout_s:g} s", retryable=True
        )

    def _error(self, exc: anthropic.APIError | sdk_http.HTTPError) -> ProviderError:
        if isinstance(exc, sdk_http.HTTPError):
            return ProviderError("anthropic", f"the connection broke ({type(exc).__name__})", retryable=True)
        if isinstance(exc, anthropic.AuthenticationError):
            return ProviderError("anthropic", "the API rejected ANTHROPIC_API_KEY (401): check the key")
        if isinstance(exc, anthropic.PermissionDeniedError):
            return ProviderError("anthropic", "ANTHROPIC_API_KEY may not use this model (403)")
        if isinstance(exc, anthropic.APIConnectionError):  # includes timeouts
            return ProviderError("anthropic", f"cannot reach {self._base_url}: {type(exc).__name__}", retryable=True)
        if isinstance(exc, anthropic.APIStatusError):
            kind = exc.type or "error"
            detail = (exc.api_message or "")[:300]
            if self._api_key:
                detail = detail.replace(self._api_key, "***")
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500 or kind in (
                "overloaded_error", "rate_limit_error", "api_error")
            status = "mid-stream" if exc.status_code == 200 else f"HTTP {exc.status_code}"
            return ProviderError("anthropic", f"{kind} ({status}): {detail}", retryable=retryable)
        return ProviderError("anthropic", type(exc).__name__)

    @staticmethod
    def _backoff(exc: anthropic.APIError | sdk_http.HTTPError, attempt: int) -> float:
        if isinstance(exc, anthropic.APIStatusError):
            header = exc.response.headers.get("retry-after")
            try:
                if header is not None:
                    return min(RETRY_MAX_S, max(0.0, float(header)))
            except ValueError:
                pass
        return min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt) * (0.8 + 0.4 * random.random())

    # --- tools ---------------------------------------------------------------------------

    async def _run_tools(self, content: Sequence[Any], request: LLMRequest) -> list[dict[str, Any]]:
        """The assistant's tool-use message and the user's tool-result message."""
        assistant: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in content:
            if block.type == "text" and block.text:
                assistant.append({"type": "text", "text": block.text})
            elif block.type == "tool_use":
                assistant.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
                text, ok = await self._run_tool(block.name, block.input, request)
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.id, "content": text}
                if not ok:
                    result["is_error"] = True
                results.append(result)
        return [{"role": "assistant", "content": assistant}, {"role": "user", "content": results}]

    async def _run_tool(self, name: str, args: Any, request: LLMRequest) -> tuple[str, bool]:
        args = args if isinstance(args, dict) else {}
        if name == "lookup_knowledge":
            query = str(args.get("query", "")).strip()
            request.notify(ToolUse(name, {"query": query}))
            if not query:
                return "lookup_knowledge needs a query.", False
            hits = self._knowledge().search(query, request.language, k=3)
            lines = [f"- {e.id.replace('_', ' ')}: {e.answer_in(request.language)}" for e, score in hits if score > 0]
            return ("\n".join(lines) or "Nothing in the knowledge base matches."), True
        if name == "notify_host":
            message = str(args.get("message", "")).strip()
            urgency = args.get("urgency") if args.get("urgency") in URGENCIES else "normal"
            request.notify(ToolUse(name, {"message": message, "urgency": urgency}))
            if not message:
                return "notify_host needs a message.", False
            await request.confirmed()  # a preemptive reply tells the host only once the turn is over
            entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "urgency": urgency,
                     "message": message, "language": request.language}
            path = self._config.path(self._llm.host_inbox)
            try:
                await asyncio.to_thread(_append_line, path, json.dumps(entry, ensure_ascii=False))
            except OSError as exc:
                log.error("notify_host: cannot write %s: %s", path, exc)
                return "The message could not be delivered to the host.", False
            log.warning("host notified (%s): %s", urgency, message)
            return "The host has been notified.", True
        return f"Unknown tool {name!r}.", False
