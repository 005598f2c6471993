"""The offline concierge, through the LLM interface and its pure core."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from server import config as config_module
from server import knowledge
from server.errors import ConfigError, ProviderError
from server.providers import create
from server.providers.base import ChatMessage, LLMRequest
from server.providers.concierge import Concierge, ConciergeLLM, detect_language

KB = knowledge.load(config_module.ROOT / "knowledge.toml")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "host-inbox.jsonl"


@pytest.fixture
def llm(inbox: Path) -> ConciergeLLM:
    config = config_module.load(llm={"provider": "concierge", "host_inbox": str(inbox)})
    return ConciergeLLM(config)


async def ask(llm: ConciergeLLM, *turns: str, language: str = "en", events: list[Any] | None = None) -> list[str]:
    history = [ChatMessage("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    notify = events.append if events is not None else (lambda event: None)
    return [piece async for piece in llm.reply(LLMRequest(history, language, notify))]


async def test_check_in_answer_streams_in_words_from_the_knowledge_base(llm: ConciergeLLM) -> None:
    yielded_to_others = asyncio.Event()

    async def other() -> None:
        yielded_to_others.set()

    task = asyncio.create_task(other())
    stream = llm.reply(LLMRequest([ChatMessage("user", "What time is check-in?")], "en"))
    pieces = [await anext(stream)]
    pieces += [p async for p in stream]
    await task
    assert yielded_to_others.is_set()
    text = "".join(pieces)
    assert text == KB.get("check_in").answer_in("en")
    assert "3 pm" in text
    assert len(pieces) == len(text.split()) and all(len(p.split()) == 1 for p in pieces)


async def test_noisy_transcript_still_answers(llm: ConciergeLLM) -> None:
    text = "".join(await ask(llm, "hi sandra um what's the wi fi password"))
    assert text.startswith("Hi! ")
    assert "naranjas 2026" in text


async def test_spanish(llm: ConciergeLLM) -> None:
    text = "".join(await ask(llm, "¿A qué hora es la salida?", language="es"))
    assert text == KB.get("check_out").answer_in("es")


async def test_clearly_spanish_question_gets_a_spanish_answer_even_in_english(llm: ConciergeLLM) -> None:
    text = "".join(await ask(llm, "¿Dónde puedo aparcar el coche?", language="en"))
    assert text == KB.get("parking").answer_in("es")


async def test_unknown_question_offers_to_ask_the_host_and_passes_it_on(llm: ConciergeLLM, inbox: Path) -> None:
    question = "What's the weather like tomorrow?"
    events: list[Any] = []
    offer = "".join(await ask(llm, question, events=events))
    assert "don't know" in offer and "Lucía" in offer
    assert events == [] and not inbox.exists()

    done = "".join(await ask(llm, question, offer, "Yes, please.", events=events))
    assert "passed your question on to Lucía" in done
    record = json.loads(inbox.read_text(encoding="utf-8"))
    message = f"Question from the guest: {question}"
    assert (record["message"], record["language"], record["urgency"]) == (message, "en", "normal")
    assert [(e.name, e.input["message"]) for e in events] == [("notify_host", message)]


async def test_declining_the_offer_writes_nothing(llm: ConciergeLLM, inbox: Path) -> None:
    offer = "".join(await ask(llm, "¿Qué tiempo hará mañana?", language="es"))
    assert "Lucía" in offer and "no lo sé" in offer
    reply = "".join(await ask(llm, "¿Qué tiempo hará mañana?", offer, "no gracias", language="es"))
    assert "algo más" in reply
    assert not inbox.exists()


@pytest.mark.parametrize(
    "said, language, expected",
    [
        ("Hello!", "en", "How can I help"),
        ("Hola, buenos días", "es", "¿En qué te puedo ayudar?"),
        ("Thanks a lot!", "en", "You're welcome"),
        ("Muchas gracias", "es", "De nada"),
        ("Okay, bye!", "en", "enjoy your stay in Valencia"),
        ("Adiós, hasta luego", "es", "disfruta de tu estancia"),
    ],
)
async def test_small_talk_is_brief(llm: ConciergeLLM, said: str, language: str, expected: str) -> None:
    text = "".join(await ask(llm, said, language=language))
    assert expected in text
    assert len(text) < 80


async def test_thanks_with_a_question_answers_the_question(llm: ConciergeLLM) -> None:
    text = "".join(await ask(llm, "thanks! and where is the nearest supermarket?"))
    assert text == KB.get("supermarket").answer_in("en")


async def test_repeat_says_the_last_reply_again(llm: ConciergeLLM) -> None:
    text = "".join(await ask(llm, "wifi?", "The network is X.", "Sorry, can you repeat that?"))
    assert text == "The network is X."


def test_greeting_comes_from_the_knowledge_base(llm: ConciergeLLM) -> None:
    assert llm.greeting("en") == KB.greeting("en")
    assert llm.greeting("es") == KB.greeting("es")


def test_registered_under_concierge() -> None:
    providers = create(config_module.load(stt={"provider": "scripted"}, llm={"provider": "concierge"},
                                          tts={"provider": "scripted"}))
    assert isinstance(providers.llm, ConciergeLLM)


def test_missing_knowledge_file_is_a_config_error(tmp_path: Path) -> None:
    config = config_module.load(knowledge={"file": str(tmp_path / "nope.toml")})
    with pytest.raises(ConfigError, match=r"\[knowledge\] file"):
        ConciergeLLM(config)


@pytest.mark.parametrize(
    "text, default, expected",
    [
        ("¿Dónde está la playa?", "en", "es"),
        ("where is the beach", "es", "en"),
        ("wifi", "es", "es"),
        ("parking", "en", "en"),
        ("gracias", "en", "es"),
        ("hola", "en", "es"),
        ("thanks", "es", "en"),
    ],
)
def test_detect_language(text: str, default: str, expected: str) -> None:
    assert detect_language(text, default) == expected


def test_core_without_a_user_turn_asks_again() -> None:
    reply = Concierge(KB).reply([], "es")
    assert reply.kind == "unheard" and reply.language == "es"


async def test_unwritable_inbox_is_a_provider_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    config = config_module.load(llm={"host_inbox": str(tmp_path / "file" / "inbox.jsonl")})
    llm = ConciergeLLM(config)
    question = "Can you book me a massage?"
    offer = "".join(await ask(llm, question))
    with pytest.raises(ProviderError, match="host inbox"):
        await ask(llm, question, offer, "yes")
