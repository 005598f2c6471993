"""A fake Anthropic Messages API: ``POST /v1/messages`` with ``"stream": true`` only.

It checks the key (``x-api-key``, or ``Authorization: Bearer`` as SDK 2.x sends it) and
``anthropic-version``, validates the body the way the real API
does (roles alternate and start with the user, no assistant prefill, tool results answer
the tool uses right before them, tools defined when tool blocks are present), answers
errors in Anthropic's JSON shape and streams replies as Server-Sent Events.

Replies are scripted per request: ``fake.anthropic.script(Reply(...), Reply(...))`` queues
them in order; once the queue is empty, ``responder(body)`` (if set) or ``default_reply``
answers. What was received is kept in ``requests``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import Changes

API_KEY = "sk-ant-fake-key-0123456789abcdef"
RETIRED_SAMPLING = ("temperature", "top_p", "top_k")


@dataclass
class ToolCall:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: "toolu_" + uuid.uuid4().hex[:24])


@dataclass
class Reply:
    """One scripted answer to one request."""

    text: str | Sequence[str] = "Hello from the fake concierge."  # a str is streamed word by word
    tool_calls: Sequence[ToolCall] = ()
    stop_reason: str | None = None  # default: tool_use if tool_calls else end_turn
    status: int | None = None  # answer this HTTP error instead of a stream (401, 429, 500, 529)
    retry_after: float | None = None  # retry-after header on an error status
    error_after: int | None = None  # an overloaded_error event after this many text deltas
    drop_after: int | None = None  # cut the TCP connection after this many text deltas
    first_token_delay: float | None = None  # seconds; None: the fake's default
    delta_delay: float | None = None

    def pieces(self) -> list[str]:
        if isinstance(self.text, str):
            return re.findall(r"\s*\S+", self.text)
        return list(self.text)


@dataclass
class AnthropicRequest:
    headers: dict[str, str]
    body: Any = None
    status: int = 200
    completed: bool = False  # the stream was written to its end (message_stop)
    client_closed: bool = False  # the client went away before the stream finished
    at: float = field(default_factory=time.monotonic)  # when it arrived


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_fake_" + uuid.uuid4().hex[:12],
    }


class AnthropicFake:
    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self.api_key = API_KEY
        self.default_reply = Reply()
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.first_token_delay = 0.0
        self.delta_delay = 0.0
        self.requests: list[AnthropicRequest] = []
        self._replies: deque[Reply] = deque()

    def script(self, *replies: Reply | str) -> None:
        """Queue the answers to the next requests, in order."""
        self._replies.extend(Reply(r) if isinstance(r, str) else r for r in replies)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages)]

    # --- handler ----------------------------------------------------------------------

    def _error(self, rec: AnthropicRequest, status: int, message: str,
               retry_after: float | None = None) -> web.Response:
        rec.status = status
        self._changes.changed()
        headers = {"retry-after": str(retry_after)} if retry_after is not None else None
        return web.json_response(error_body(status, message), status=status, headers=headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec = AnthropicRequest(headers=dict(request.headers))
        self.requests.append(rec)
        self._changes.changed()
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        # SDK 2.x sends the key as a bearer token; raw HTTP clients use x-api-key.
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return self._error(rec, 401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(rec, 400, "anthropic-version: header is required")
        try:
            rec.body = await request.json()
        except json.JSONDecodeError:
            return self._error(rec, 400, "The request body is not valid JSON.")
        problem = validate(rec.body)
        if problem:
            return self._error(rec, 400, problem)
        if self._replies:
            reply = self._replies.popleft()
        elif self.responder is not None:
            reply = self.responder(rec.body)
        else:
            reply = self.default_reply
        if reply.status is not None:
            messages = {401: "invalid x-api-key", 429: "Number of requests has exceeded your rate limit",
                        529: "Overloaded"}
            message = messages.get(reply.status, "Internal server error")
            return self._error(rec, reply.status, message, reply.retry_after)

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                     "request-id": "req_fake_" + uuid.uuid4().hex[:12]}
        )
        await response.prepare(request)
        try:
            await self._stream(request, response, rec.body, reply)
            rec.completed = True
        except ConnectionResetError:  # a write to a connection the client closed
            rec.client_closed = True
            self._changes.changed()
            return response
        except asyncio.CancelledError:  # handler_cancellation: the client went away
            rec.client_closed = True
            self._changes.changed()
            raise
        self._changes.changed()
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse, body: dict[str, Any],
                      reply: Reply) -> None:
        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

        first_delay = self.first_token_delay if reply.first_token_delay is None else reply.first_token_delay
        delta_delay = self.delta_delay if reply.delta_delay is None else reply.delta_delay
        input_tokens = sum(len(json.dumps(m)) for m in body["messages"]) // 4
        await send("message_start", {
            "type": "message_start",
            "message": {
                "id": "msg_fake_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                "model": body["model"], "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            },
        })
        await send("ping", {"type": "ping"})
        if first_delay:
            await asyncio.sleep(first_delay)
        index = 0
        output_tokens = 1
        pieces = reply.pieces()
        if pieces:
            await send("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {"type": "text", "text": ""}})
            for n, piece in enumerate(pieces):
                if reply.error_after is not None and n == reply.error_after:
                    await send("error", overloaded)
                    return
                if reply.drop_after is not None and n == reply.drop_after:
                    if request.transport is not None:
                        request.transport.abort()  # no final chunk: the body just stops
                    return
                if n and delta_delay:
                    await asyncio.sleep(delta_delay)
                await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "text_delta", "text": piece}})
                output_tokens += 1
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        if reply.error_after is not None and reply.error_after >= len(pieces):
            await send("error", overloaded)
            return
        for call in reply.tool_calls:
            await send("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {"type": "tool_use", "id": call.id,
                                                                 "name": call.name, "input": {}}})
            raw = json.dumps(call.input)
            for k in range(0, len(raw), 12):  # input arrives as partial JSON, like the real API
                delta = {"type": "input_json_delta", "partial_json": raw[k:k + 12]}
                await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
            output_tokens += len(raw) // 4
        stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        await send("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": output_tokens}})
        await send("message_stop", {"type": "message_stop"})


# --- validation, as the real API answers 400 ---------------------------------------------


def validate(body: Any) -> str | None:
    """The first problem the real API would reject ``body`` for, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    if body.get("stream") is not True:
        return "this fake serves only streaming requests (stream: true)"
    if model.startswith("claude-haiku-5"):
        for key in RETIRED_SAMPLING:
            if key in body:
                return f"{key}: is not supported for model {model}"
    problem = _validate_system(body.get("system"))
    if problem:
        return problem
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", str(tool.get("name", ""))):
                return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.input_schema: Input should be an object schema"
    choice = body.get("tool_choice")
    choices = ("auto", "any", "tool", "none")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in choices):
        return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
    return _validate_messages(body.get("messages"), model, bool(tools))


def _validate_system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid string or list"
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return f"system.{i}: Input should be a text block"
        if not block["text"]:
            return f"system.{i}: text content blocks must be non-empty"
        cache = block.get("cache_control")
        if cache is not None and cache.get("type") != "ephemeral":
            return f"system.{i}.cache_control.type: Input should be 'ephemeral'"
    return None


def _validate_messages(messages: Any, model: str, have_tools: bool) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        role = message["role"]
        if i == 0 and role != "user":
            return "messages: first message must use the \"user\" role"
        if i and messages[i - 1].get("role") == role:
            return "messages: roles must alternate between \"user\" and \"assistant\""
        content = message.get("content")
        if isinstance(content, str):
            if not content:
                if role == "user":
                    return f"messages.{i}: user messages must have non-empty content"
                return (f"messages.{i}: all messages must have non-empty content except for the optional final "
                        "assistant message")
            blocks: list[Any] = []
        elif isinstance(content, list) and content:
            blocks = content
        else:
            return f"messages.{i}.content: Input should be a non-empty string or list"
        tool_ids: set[str] = set()
        answered: set[str] = set()
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"messages.{i}.content.{j}"
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    return f"{where}: text content blocks must be non-empty"
            elif kind == "tool_use":
                if role != "assistant":
                    return f"{where}: tool_use blocks are only allowed in assistant messages"
                if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
                    return f"{where}: tool_use blocks need an id and an input object"
                tool_ids.add(block["id"])
            elif kind == "tool_result":
                if role != "user":
                    return f"{where}: tool_result blocks are only allowed in user messages"
                if block.get("tool_use_id") not in previous_tool_ids:
                    return (f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message.")
                answered.add(block["tool_use_id"])
            else:
                return f"{where}.type: Input tag {kind!r} does not match any of the expected tags"
            if kind in ("tool_use", "tool_result") and not have_tools:
                return "Requests which include `tool_use` or `tool_result` blocks must define tools."
        if previous_tool_ids - answered:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(sorted(previous_tool_ids - answered))}")
        previous_tool_ids = tool_ids
    if previous_tool_ids:
        return "messages: the final assistant message has tool_use blocks without results"
    if messages[-1]["role"] == "assistant" and model.startswith("claude-haiku-5"):
        return "This model does not support assistant message prefill. The conversation must end with a user message."
    return None
