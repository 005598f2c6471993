"""The property's knowledge base: ``knowledge.toml``, read once, searched per question.

Both the offline concierge (which answers from it) and an LLM provider (which is given
:meth:`KnowledgeBase.as_prompt` as its system prompt) read the same file.

Search tolerates speech-recognition noise ("what time is checking", "wi fi", missing
accents): a question and each entry are compared as TF-IDF vectors of words and of
character trigrams, after accent folding. Each entry is scored against each of its
example questions and keywords (the best one counts) and against all of them together.
"""

from __future__ import annotations

import math
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

LANGUAGES = ("en", "es")

# Words that say nothing about the topic. Accent-folded, both languages.
STOPWORDS = frozenset(
    """
    a an the is are was were be been am do does did doing i me my we us our you your it its this that
    these those there here what whats which who whom how when where why can could would should will
    shall may might must to of in on at for from by with about as into and or but if so not no yes
    please tell know want need like get got have has had there's it's i'm im let lets just some any
    hi hello hey sandra okay ok um uh er well thanks thank one
    el la los las un una unos unas es son esta estan este esto ese esa eso de del al a en por para con
    sin que cual cuales quien como cuando donde cuanto cuanta cuantos cuantas y o pero si no me mi mis
    te tu tus se le les lo nos hay puedo puedes podemos puede quiero quisiera saber decir dime favor
    hola buenas gracias vale pues eh oye
    """.split()
)

_WORD_RE = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lower case without accents; hyphenated words joined ("Wi-Fi" -> "wifi")."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"(?<=\w)-(?=\w)", "", text)


def tokens(text: str) -> list[str]:
    return _WORD_RE.findall(fold(text))


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") else word


def _trigrams(word: str) -> Iterable[str]:
    padded = f"#{word}#"
    return (padded[i : i + 3] for i in range(len(padded) - 2))


def features(text: str) -> tuple[Counter[str], Counter[str]]:
    """Word and character-trigram counts of ``text``, stop words left out.

    A short word is also joined to its neighbour, so that "check in" and "wi fi" share
    trigrams with "checkin"/"checking" and "wifi".
    """
    raw = tokens(text)
    words = Counter(_stem(w) for w in raw if w not in STOPWORDS)
    chars: Counter[str] = Counter()
    for w in words.elements():
        chars.update(_trigrams(w))
    for a, b in zip(raw, raw[1:]):
        if (len(a) <= 3 or len(b) <= 3) and not (a in STOPWORDS and b in STOPWORDS):
            chars.update(g for g in _trigrams(a + b) if g not in _trigrams(a) and g not in _trigrams(b))
    return words, chars


# --- language -------------------------------------------------------------------------

_ES_WORDS = frozenset(
    "que el la los las de del es hay donde como cual cuando puedo puedes podemos por para una unos "
    "esta estan tengo tiene quiero hola gracias buenos buenas dias tardes noches adios hasta luego "
    "si vale claro perfecto muy bien con mi piso llaves playa entrada salida hora contrasena".split()
)
_EN_WORDS = frozenset(
    "the is what where how can could do does you my are there to of and hello hi thanks thank please "
    "yes yeah when which have has we our it this that good morning bye goodbye key keys flat time".split()
)


def detect_language(text: str, default: str) -> str:
    """"es" or "en" when ``text`` is clearly one of them, else ``default``."""
    words = tokens(text)
    es = sum(w in _ES_WORDS for w in words) + (2 if re.search(r"[¿¡ñ]", text) else 0)
    en = sum(w in _EN_WORDS for w in words)
    if es >= en + 2 or (es and not en and len(words) <= 2):
        return "es"
    if en >= es + 2 or (en and not es and len(words) <= 2):
        return "en"
    return default


# --- data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    id: str
    answer: Mapping[str, str]
    questions: Mapping[str, tuple[str, ...]]
    keywords: Mapping[str, tuple[str, ...]]

    def answer_in(self, language: str) -> str:
        return self.answer.get(language) or self.answer["en"]

    def phrases(self) -> list[tuple[str, str]]:
        """(language, text) of every example question and keyword."""
        return [(lang, t) for lang in LANGUAGES for group in (self.questions, self.keywords) for t in group[lang]]


@dataclass(frozen=True)
class _Vector:
    weights: dict[str, float]
    norm: float

    @classmethod
    def of(cls, counts: Mapping[str, float], idf: Mapping[str, float], default_idf: float) -> _Vector:
        weights = {t: (1 + math.log(n)) * idf.get(t, default_idf) for t, n in counts.items() if n > 0}
        return cls(weights, math.sqrt(sum(w * w for w in weights.values())) or 1.0)

    def cosine(self, other: _Vector) -> float:
        small, big = (self, other) if len(self.weights) <= len(other.weights) else (other, self)
        dot = sum(w * big.weights.get(t, 0.0) for t, w in small.weights.items())
        return dot / (self.norm * other.norm)


@dataclass(frozen=True)
class _Doc:
    words: _Vector
    chars: _Vector


class _Index:
    """TF-IDF over the entries (one document per entry, plus one per phrase)."""

    CHAR_WEIGHT = 0.6  # of the similarity; the rest is word similarity
    BEST_PHRASE_WEIGHT = 0.6  # of the score; the rest is the whole-entry similarity

    def __init__(self, entries: tuple[Entry, ...]) -> None:
        per_entry = []
        for e in entries:
            words: Counter[str] = Counter()
            chars: Counter[str] = Counter()
            for _, text in e.phrases():
                w, c = features(text)
                words.update(w)
                chars.update(c)
            per_entry.append((words, chars))
        n = len(entries)
        self._word_idf = self._idf((w for w, _ in per_entry), n)
        self._char_idf = self._idf((c for _, c in per_entry), n)
        self._default_idf = math.log(n + 1) + 1
        self._entries = entries
        self._whole = [self._doc(w, c) for w, c in per_entry]
        self._phrases = [[self._doc(*features(text)) for _, text in e.phrases()] for e in entries]

    @staticmethod
    def _idf(docs: Iterable[Counter[str]], n: int) -> dict[str, float]:
        df: Counter[str] = Counter()
        for d in docs:
            df.update(d.keys())
        return {t: math.log((n + 1) / (k + 0.5)) + 1 for t, k in df.items()}

    def _doc(self, words: Mapping[str, float], chars: Mapping[str, float]) -> _Doc:
        return _Doc(
            _Vector.of(words, self._word_idf, self._default_idf),
            _Vector.of(chars, self._char_idf, self._default_idf),
        )

    def _similarity(self, a: _Doc, b: _Doc) -> float:
        return self.CHAR_WEIGHT * a.chars.cosine(b.chars) + (1 - self.CHAR_WEIGHT) * a.words.cosine(b.words)

    def scores(self, question: str) -> list[float]:
        q = self._doc(*features(question))
        if not q.chars.weights and not q.words.weights:
            return [0.0] * len(self._entries)
        out = []
        for whole, phrases in zip(self._whole, self._phrases):
            best = max(self._similarity(q, p) for p in phrases)
            out.append(self.BEST_PHRASE_WEIGHT * best + (1 - self.BEST_PHRASE_WEIGHT) * self._similarity(q, whole))
        return out


@dataclass(frozen=True)
class KnowledgeBase:
    name: str
    host: str
    city: str
    greetings: Mapping[str, str]
    entries: tuple[Entry, ...]
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _Index(self.entries))

    def greeting(self, language: str) -> str:
        return self.greetings.get(language) or self.greetings["en"]

    def get(self, entry_id: str) -> Entry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)

    def search(self, question: str, language: str = "en", k: int = 3) -> list[tuple[Entry, float]]:
        """The ``k`` entries most similar to ``question``, best first, with scores in 0..1.

        Example phrases in both languages are searched whatever ``language`` is (guests
        mix them, and recognisers transcribe "wifi" and "parking" the same in both).
        """
        del language  # see docstring
        ranked = sorted(zip(self.entries, self._index.scores(question)), key=lambda es: -es[1])
        return [(e, round(s, 4)) for e, s in ranked[:k]]

    def as_prompt(self, language: str) -> str:
        """The facts of the property, compactly, for an LLM's system prompt."""
        if language == "es":
            head = f"Datos del alojamiento {self.name} en {self.city} (anfitriona: {self.host}):"
        else:
            head = f"Facts about {self.name}, a holiday flat in {self.city} (host: {self.host}):"
        lines = [head]
        lines.extend(f"- {e.id.replace('_', ' ')}: {e.answer_in(language)}" for e in self.entries)
        return "\n".join(lines)


# --- loading --------------------------------------------------------------------------


def load(path: str | Path) -> KnowledgeBase:
    """Read a knowledge file; any problem is a :class:`ConfigError` naming ``[knowledge] file``."""
    path = Path(path)
    where = f"[knowledge] file = {str(path)!r}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    try:
        return _parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _parse(raw: Mapping[str, Any]) -> KnowledgeBase:
    prop = raw.get("property", {})
    entries = raw.get("entry")
    if not isinstance(entries, list) or not entries:
        raise ValueError("no [[entry]] tables")
    seen: set[str] = set()
    parsed = []
    for i, item in enumerate(entries):
        entry_id = item.get("id")
        if not isinstance(entry_id, str) or not entry_id:
            raise ValueError(f"entry #{i + 1} has no id")
        if entry_id in seen:
            raise ValueError(f"entry id {entry_id!r} appears twice")
        seen.add(entry_id)
        parsed.append(
            Entry(
                id=entry_id,
                answer=_by_language(item, "answer", entry_id, str),
                questions=_by_language(item, "questions", entry_id, tuple),
                keywords=_by_language(item, "keywords", entry_id, tuple),
            )
        )
    return KnowledgeBase(
        name=_text(prop, "name", "property"),
        host=_text(prop, "host", "property"),
        city=_text(prop, "city", "property"),
        greetings=_by_language(raw, "greeting", "greeting", str),
        entries=tuple(parsed),
    )


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"[{where}] {key} is missing")
    return value


def _by_language(table: Mapping[str, Any], key: str, where: str, kind: type) -> dict[str, Any]:
    values = table.get(key)
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: {key} is missing (needs {' and '.join(f'{key}.{lang}' for lang in LANGUAGES)})")
    out: dict[str, Any] = {}
    for lang in LANGUAGES:
        value = values.get(lang)
        if kind is str and isinstance(value, str) and value.strip():
            out[lang] = value.strip()
        elif kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[lang] = tuple(value)
        else:
            expected = "a string" if kind is str else "a list of strings"
            raise ValueError(f"{where}: {key}.{lang} is missing or not {expected}")
    return out
