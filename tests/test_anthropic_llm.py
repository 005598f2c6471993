"""AnthropicLLM against the fake Messages API (real SDK, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest

from server.errors import ProviderError
from server.providers.anthropic_llm import INTERRUPTED, AnthropicLLM, build_messages
from server.providers.base import ChatMessage, LLMRequest, ToolUse
from tests.fakes.anthropic_fake import Reply, ToolCall
from tests.support.knowledge import KNOWLEDGE

WRONG_KEY = "sk-ant-wrong-secret-value-424242"


@pytest.fixture
def make_llm(provider_factory, tmp_path):
    (tmp_path / "knowledge.toml").write_text(KNOWLEDGE, encoding="utf-8")

    async def make(env: dict[str, str] | None = None, **llm: Any) -> AnthropicLLM:
        provider = provider_factory(AnthropicLLM, env, llm={"host_inbox": "inbox/host.jsonl", **llm})
        await provider.start()
        return provider

    return make


@pytest.fixture
async def llm(make_llm):
    return await make_llm()


def ask(text: str, language: str = "en", history: list[ChatMessage] | None = None,
        events: list[dict[str, Any]] | None = None) -> LLMRequest:
    messages = [*(history or []), ChatMessage("user", text)]
    if events is None:
        return LLMRequest(messages, language)
    return LLMRequest(messages, language, notify=events.append)


async def collect(llm: AnthropicLLM, request: LLMRequest) -> list[str]:
    return [piece async for piece in llm.reply(request)]


# --- history ------------------------------------------------------------------------------


def test_history_merges_marks_interruptions_and_starts_with_the_user():
    history = [
        ChatMessage("assistant", "Hi, I'm Sandra."),
        ChatMessage("user", "Hello"),
        ChatMessage("user", "what time is check-in?"),
        ChatMessage("assistant", "Check-in is from", interrupted=True),
        ChatMessage("user", "  "),
        ChatMessage("user", "and the wifi?"),
    ]
    assert build_messages(history, 12, 4000) == [
        {"role": "user", "content": "Hello\nwhat time is check-in?"},
        {"role": "assistant", "content": f"Check-in is from {INTERRUPTED}"},
        {"role": "user", "content": "and the wifi?"},
    ]


def test_history_is_bounded_by_turns_and_tokens():
    history = []
    for i in range(20):
        history += [ChatMessage("user", f"question {i} " + "x" * 100), ChatMessage("assistant", f"answer {i}")]
    history.append(ChatMessage("user", "last"))
    by_turns = build_messages(history, 5, 100_000)
    assert len(by_turns) == 5 and by_turns[0]["role"] == "user" and by_turns[-1]["content"] == "last"
    by_tokens = build_messages(history, 100, 60)  # ~240 characters
    assert by_tokens[0]["role"] == "user" and by_tokens[-1]["content"] == "last"
    assert sum(len(m["content"]) for m in by_tokens) <= 240
    roles = [m["role"] for m in by_tokens]
    assert all(a != b for a, b in zip(roles, roles[1:]))


async def test_greeting_comes_from_the_knowledge_base(llm):
    assert llm.greeting("es") == "Hola, soy Sandra."


def test_history_without_a_guest_message_is_an_error():
    with pytest.raises(ProviderError, match="no message from the guest"):
        build_messages([ChatMessage("assistant", "Hi")], 12, 4000)


# --- streaming ----------------------------------------------------------------------------


async def test_reply_streams_in_pieces_with_persona_knowledge_and_tools(fake, llm):
    fake.anthropic.script(Reply("Check-in is from three in the afternoon.", delta_delay=0.005))
    history = [ChatMessage("assistant", "Hola"), ChatMessage("user", "Hola"),
               ChatMessage("assistant", "La entrada es", interrupted=True)]
    pieces = await collect(llm, ask("¿a qué hora es la entrada?", "es", history))
    assert len(pieces) > 3
    assert "".join(pieces) == "Check-in is from three in the afternoon."

    (sent,) = fake.anthropic.requests
    assert sent.status == 200 and sent.completed
    body = sent.body
    assert body["model"] == "claude-haiku-5-5" and body["stream"] is True
    (system,) = body["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert "Sandra" in system["text"] and "Spanish" in system["text"]
    assert "La entrada es a partir de las tres de la tarde." in system["text"]
    assert [t["name"] for t in body["tools"]] == ["lookup_knowledge", "notify_host"]
    assert body["messages"] == [
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": f"La entrada es {INTERRUPTED}"},
        {"role": "user", "content": "¿a qué hora es la entrada?"},
    ]


async def test_notify_host_round_trip(fake, llm, tmp_path):
    call = ToolCall("notify_host", {"message": "The shower in the bathroom is leaking.", "urgency": "urgent"})
    fake.anthropic.script(Reply("Let me tell Marta.", tool_calls=[call]), Reply("I've told Marta, she'll call you."))
    events: list[dict[str, Any]] = []
    text = "".join(await collect(llm, ask("The shower is leaking!", events=events)))
    assert text == "Let me tell Marta. I've told Marta, she'll call you."

    inbox = tmp_path / "inbox" / "host.jsonl"
    (line,) = inbox.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert entry["message"] == "The shower in the bathroom is leaking." and entry["urgency"] == "urgent"
    assert events == [ToolUse("notify_host", {"message": "The shower in the bathroom is leaking.", "urgency": "urgent"})]

    first, second = fake.anthropic.requests
    assert second.status == 200  # the fake accepted the tool_use / tool_result pairing
    assistant, result = second.body["messages"][-2:]
    assert assistant["content"][1] == {"type": "tool_use", "id": call.id, "name": "notify_host", "input": call.input}
    assert result["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "The host has been notified."}
    ]


async def test_lookup_knowledge_round_trip(fake, llm):
    fake.anthropic.script(Reply([], tool_calls=[ToolCall("lookup_knowledge", {"query": "wifi password"})]),
                          Reply("The password is naranja2024."))
    events: list[dict[str, Any]] = []
    text = "".join(await collect(llm, ask("what's the wifi?", events=events)))
    assert text == "The password is naranja2024."
    assert events == [ToolUse("lookup_knowledge", {"query": "wifi password"})]
    result = fake.anthropic.requests[1].body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "naranja2024" in result["content"]


async def test_tool_rounds_are_bounded(fake, llm):
    fake.anthropic.responder = lambda body: (
        Reply("Done.") if body.get("tool_choice") == {"type": "none"}
        else Reply([], tool_calls=[ToolCall("lookup_knowledge", {"query": "wifi"})])
    )
    assert "".join(await collect(llm, ask("wifi?"))) == "Done."
    assert len(fake.anthropic.requests) == 4


# --- barge-in -----------------------------------------------------------------------------


async def test_cancelling_the_task_closes_the_http_stream(fake, llm):
    fake.anthropic.script(Reply(" ".join(["word"] * 200), delta_delay=0.02))
    got: list[str] = []
    two = asyncio.Event()

    async def consume() -> None:
        async for piece in llm.reply(ask("tell me everything")):
            got.append(piece)
            if len(got) == 2:
                two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.until(lambda: fake.anthropic.requests[0].client_closed, what="the client closing the SSE stream")
    assert not fake.anthropic.requests[0].completed


async def test_closing_the_generator_closes_the_http_stream(fake, llm):
    fake.anthropic.script(Reply(" ".join(["word"] * 200), delta_delay=0.02))
    async with contextlib.aclosing(llm.reply(ask("tell me everything"))) as pieces:
        async for _ in pieces:
            break
    await fake.until(lambda: fake.anthropic.requests[0].client_closed, what="the client closing the SSE stream")


# --- errors -------------------------------------------------------------------------------


async def test_bad_key_names_the_variable_not_the_value(fake, make_llm, caplog):
    caplog.set_level(logging.DEBUG)
    llm = await make_llm(env={"ANTHROPIC_API_KEY": WRONG_KEY})
    try:
        with pytest.raises(ProviderError) as info:
            await collect(llm, ask("hi"))
    finally:
        await llm.aclose()
    error = info.value
    assert "ANTHROPIC_API_KEY" in str(error) and not error.retryable
    assert WRONG_KEY not in str(error) and WRONG_KEY not in repr(error)
    assert WRONG_KEY not in caplog.text
    assert len(fake.anthropic.requests) == 1  # not retried


async def test_missing_key_fails_on_the_first_turn(fake, make_llm):
    llm = await make_llm(env={"ANTHROPIC_API_KEY": ""})
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY is not set"):
        await collect(llm, ask("hi"))
    assert fake.anthropic.requests == []


async def test_overloaded_529_then_success_is_retried(fake, llm):
    fake.anthropic.script(Reply(status=529), Reply(status=429, retry_after=0), Reply("Fine, thanks."))
    assert "".join(await collect(llm, ask("hi"))) == "Fine, thanks."
    assert [r.status for r in fake.anthropic.requests] == [529, 429, 200]


async def test_retries_are_bounded(fake, make_llm):
    llm = await make_llm(max_retries=1)
    fake.anthropic.script(Reply(status=529), Reply(status=529), Reply("never"))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(llm, ask("hi"))
    finally:
        await llm.aclose()
    assert info.value.retryable and "overloaded_error" in str(info.value)
    assert len(fake.anthropic.requests) == 2


async def test_overloaded_before_the_first_token_is_retried(fake, llm):
    fake.anthropic.script(Reply("lost", error_after=0), Reply("Here I am."))
    assert "".join(await collect(llm, ask("hi"))) == "Here I am."
    assert len(fake.anthropic.requests) == 2


async def test_overloaded_mid_stream_is_an_error_without_repeating_text(fake, llm):
    fake.anthropic.script(Reply("One two three four five", error_after=2), Reply("should not be asked"))
    got: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for piece in llm.reply(ask("count")):
            got.append(piece)
    assert "".join(got) == "One two"
    assert info.value.retryable and "overloaded_error" in str(info.value)
    assert len(fake.anthropic.requests) == 1


async def test_first_token_timeout(fake, make_llm):
    llm = await make_llm(first_token_timeout_s=0.3)
    fake.anthropic.script(Reply("too late", first_token_delay=10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ProviderError, match="no first token") as info:
            await collect(llm, ask("hi"))
    finally:
        await llm.aclose()
    assert info.value.retryable
    assert loop.time() - started < 3
    await fake.until(lambda: fake.anthropic.requests[0].client_closed, what="the timed-out stream to be closed")


async def test_a_connection_cut_mid_stream_is_a_provider_error(fake, llm):
    fake.anthropic.script(Reply("One two three four five", drop_after=2))
    got: list[str] = []
    with pytest.raises(ProviderError, match="connection broke") as info:
        async for piece in llm.reply(ask("count")):
            got.append(piece)
    assert "".join(got) == "One two" and info.value.retryable
    assert len(fake.anthropic.requests) == 1


async def test_a_connection_cut_before_the_first_token_is_retried(fake, llm):
    fake.anthropic.script(Reply("lost", drop_after=0), Reply("Back again."))
    assert "".join(await collect(llm, ask("hi"))) == "Back again."
    assert len(fake.anthropic.requests) == 2
