"""The offline concierge: answers from the knowledge base, no network, no model.

:class:`Concierge` is the pure core: given the conversation it decides the reply (an
answer, small talk, "I don't know, shall I ask the host?", passing a question on).
:class:`ConciergeLLM` streams that reply word by word like a real LLM and, when the guest
accepts the offer, appends the question to the host inbox (``[llm] host_inbox``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .. import knowledge
from ..config import Config
from ..errors import ProviderError
from ..knowledge import detect_language
from .base import LLM, ChatMessage, LLMRequest, ToolUse

# Below this search score, the knowledge base is taken not to know the answer.
MATCH_THRESHOLD = 0.3

Kind = Literal["answer", "small_talk", "unknown", "host_message", "declined", "repeat", "unheard"]


@dataclass(frozen=True)
class Reply:
    text: str
    language: str
    kind: Kind
    entry_id: str | None = None
    # A guest's question to pass on to the host (the guest said yes to the offer).
    host_question: str | None = None


# --- small talk -----------------------------------------------------------------------

# Phrases (accent-folded) by kind, most decisive kind first.
_SMALL_TALK = {
    "goodbye": ["goodbye", "bye", "bye bye", "see you", "good night", "adios", "hasta luego", "hasta manana",
                "chao", "nos vemos", "buenas noches"],
    "thanks": ["thanks", "thank you", "thank you very much", "cheers", "gracias", "muchas gracias",
               "mil gracias"],
    "how_are_you": ["how are you", "how are you doing", "que tal", "como estas", "como esta"],
    "greeting": ["hi", "hello", "hey", "good morning", "good afternoon", "good evening", "hola", "buenos dias",
                 "buenas tardes", "buenas"],
}
_FILLER = frozenset(
    "sandra so very much lot muchas oh ah um uh er hmm mm okay ok vale well pues bueno great perfect perfecto "
    "sorry perdona perdon".split()
)

_SMALL_TALK_REPLIES = {
    "goodbye": ("Goodbye, and enjoy your stay in {city}!", "¡Adiós, y disfruta de tu estancia en {city}!"),
    "thanks": ("You're welcome! Is there anything else I can help with?", "¡De nada! ¿Te ayudo con algo más?"),
    "how_are_you": ("I'm very well, thank you! How can I help you?", "¡Muy bien, gracias! ¿En qué te puedo ayudar?"),
    "greeting": ("Hello! How can I help you?", "¡Hola! ¿En qué te puedo ayudar?"),
}

_YES = ["yes", "yeah", "yep", "sure", "please", "yes please", "go ahead", "ok", "okay", "si", "claro", "vale",
        "por favor", "de acuerdo", "venga", "si por favor"]
_NO = ["no", "nope", "no thanks", "no thank you", "not now", "no gracias", "ahora no", "no hace falta"]
_REPEAT = ["repeat", "say that again", "say again", "pardon", "sorry what", "what did you say", "repite",
           "repitelo", "otra vez", "puedes repetir", "como dices"]


def _phrase_re(phrases: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(phrases, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in alternatives) + r")\b")


_SMALL_TALK_RE = {kind: _phrase_re(phrases) for kind, phrases in _SMALL_TALK.items()}
_YES_RE, _NO_RE, _REPEAT_RE = _phrase_re(_YES), _phrase_re(_NO), _phrase_re(_REPEAT)


def _plain(text: str) -> str:
    return " ".join(knowledge.tokens(text))


def _rest(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Meaningful words left once ``pattern`` is taken out of ``text``."""
    return [w for w in pattern.sub(" ", text).split() if w not in knowledge.STOPWORDS and w not in _FILLER]


def small_talk(text: str) -> tuple[str | None, list[str]]:
    """The kind of small talk in ``text`` (None if none) and the words left besides it."""
    plain = _plain(text)
    kinds = [kind for kind, pattern in _SMALL_TALK_RE.items() if pattern.search(plain)]
    for pattern in _SMALL_TALK_RE.values():
        plain = pattern.sub(" ", plain)
    rest = [w for w in plain.split() if w not in knowledge.STOPWORDS and w not in _FILLER]
    return (kinds[0] if kinds else None), rest


# --- the core -------------------------------------------------------------------------


class Concierge:
    """Decides the reply to the last user message of a conversation. No I/O, no clock."""

    def __init__(self, kb: knowledge.KnowledgeBase, threshold: float = MATCH_THRESHOLD) -> None:
        self.kb = kb
        self.threshold = threshold

    def offer(self, language: str) -> str:
        if language == "es":
            return f"¿Quieres que le pase tu pregunta a {self.kb.host}?"
        return f"Would you like me to pass your question on to {self.kb.host}?"

    def reply(self, history: Sequence[ChatMessage], language: str) -> Reply:
        user = history[-1].text.strip() if history and history[-1].role == "user" else ""
        if not knowledge.tokens(user):
            return self._say("Sorry, I didn't catch that. Could you say it again?",
                             "Perdona, no te he entendido. ¿Puedes repetirlo?", language, "unheard")
        language = detect_language(user, language)
        plain = _plain(user)

        follow_up = self._after_offer(history, plain, language)
        if follow_up is not None:
            return follow_up

        if _REPEAT_RE.search(plain) and not _rest(plain, _REPEAT_RE):
            previous = next((m.text for m in reversed(history[:-1]) if m.role == "assistant"), "")
            if previous:
                return Reply(previous, language, "repeat")

        kind, rest = small_talk(user)
        if kind is not None and not rest:
            en, es = _SMALL_TALK_REPLIES[kind]
            return self._say(en.format(city=self.kb.city), es.format(city=self.kb.city), language, "small_talk")
        if not rest:  # "yes", "okay", "um": nothing to answer
            return self._say("All right. What can I help you with?", "Vale. ¿En qué te puedo ayudar?",
                             language, "small_talk")

        (entry, score), *_ = self.kb.search(user, language, k=1)
        if score >= self.threshold:
            text = entry.answer_in(language)
            if kind == "greeting":
                text = ("¡Hola! " if language == "es" else "Hi! ") + text
            return Reply(text, language, "answer", entry_id=entry.id)

        sorry = "Lo siento, eso no lo sé." if language == "es" else "I'm sorry, I don't know that."
        return Reply(f"{sorry} {self.offer(language)}", language, "unknown")

    def _after_offer(self, history: Sequence[ChatMessage], plain: str, language: str) -> Reply | None:
        """The guest's yes or no to "shall I pass your question on?", if that was just asked."""
        if len(history) < 3 or history[-2].role != "assistant":
            return None
        offered = _plain(history[-2].text)
        if _plain(self.offer("en")) not in offered and _plain(self.offer("es")) not in offered:
            return None
        if _NO_RE.search(plain) and not _rest(plain, _NO_RE):
            return self._say("No problem. Anything else I can help with?",
                             "De acuerdo. ¿Te ayudo con algo más?", language, "declined")
        if _YES_RE.search(plain) and not _rest(plain, _YES_RE) and history[-3].role == "user":
            host = self.kb.host
            return self._say(
                f"Done. I've passed your question on to {host}, who will get back to you soon.",
                f"Hecho. Le he pasado tu pregunta a {host}, que te responderá pronto.",
                language,
                "host_message",
                host_question=history[-3].text,
            )
        return None

    @staticmethod
    def _say(en: str, es: str, language: str, kind: Kind, host_question: str | None = None) -> Reply:
        return Reply(es if language == "es" else en, language, kind, host_question=host_question)


# --- the provider ---------------------------------------------------------------------


class ConciergeLLM(LLM):
    name = "concierge"

    def __init__(self, config: Config) -> None:
        self._kb = knowledge.load(config.path(config.knowledge.file))
        self._concierge = Concierge(self._kb)
        self._inbox = config.path(config.llm.host_inbox)

    def greeting(self, language: str) -> str:
        return self._kb.greeting(language)

    async def reply(self, request: LLMRequest) -> AsyncIterator[str]:
        reply = self._concierge.reply(request.history, request.language)
        if reply.host_question is not None:
            await self._notify_host(reply, request)
        pieces = re.findall(r"\S+\s*", reply.text)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(0)
            yield piece

    async def _notify_host(self, reply: Reply, request: LLMRequest) -> None:
        """Append the guest's question to the host inbox, in the same format as the
        Anthropic provider's ``notify_host`` tool."""
        message = f"Question from the guest: {reply.host_question}"
        request.notify(ToolUse("notify_host", {"message": message, "urgency": "normal"}))
        entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "urgency": "normal",
                 "message": message, "language": reply.language}
        try:
            await asyncio.to_thread(_append_line, self._inbox, json.dumps(entry, ensure_ascii=False))
        except OSError as exc:
            raise ProviderError(self.name, f"cannot write the host inbox {self._inbox}: {exc}") from None


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
