"""Backchannels: the short words a listener says to show they follow ("uh-huh", "vale").

Speech over Sandra that holds only backchannels does not interrupt her (issue 10, two-step
barge-in). :func:`is_backchannel` is robust to what Whisper writes: punctuation, capitals,
accents, hyphens and repetitions ("Vale, vale.", "Mm-hmm.", "Uh huh", "Sí, sí, claro.",
"Okay, yeah.") all count; any other word makes it a real interruption ("Wait, is there
parking?", "Vale, pero ¿a qué hora?").

Pure and cheap (microseconds).
"""

from __future__ import annotations

import re

from .words import fold, words

# Phrases per language, accent-folded and in :func:`words` form ("mm-hmm" -> "mm hmm").
PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "uh huh", "mm hmm", "mhm", "hmm", "mm", "yeah", "yes", "yep", "yup", "ok", "okay", "o k",
        "right", "sure", "i see", "oh i see", "got it", "alright", "all right", "ah", "oh", "aha",
        "uh", "um",
    ),
    "es": (
        "vale", "si", "aja", "claro", "ya", "mhm", "mm hmm", "mm", "hmm", "entiendo", "de acuerdo",
        "ok", "okay", "vale vale", "ah", "aha", "uh huh", "ajam", "bien", "muy bien", "perfecto",
    ),
}
_LONGEST = 3
# Stretched sounds: "mmm" -> "mm", "hmmm" -> "hmm", "mhmm" -> "mhm", "uhhuh" -> "uh huh".
_STRETCH = [
    (re.compile(r"^m{3,}$"), "mm"),
    (re.compile(r"^hm{2,}$"), "hmm"),
    (re.compile(r"^mh?m+$"), "mhm"),
    (re.compile(r"^m+hm+$"), "mhm"),
    (re.compile(r"^uh+huh$"), "uh huh"),
    (re.compile(r"^a+h+a+$"), "aha"),
    (re.compile(r"^o+h+$"), "oh"),
    (re.compile(r"^a+h+$"), "ah"),
    (re.compile(r"^ye+a+h+$"), "yeah"),
    (re.compile(r"^oka+y$"), "okay"),
]


def _normal(word: str) -> list[str]:
    word = fold(word)
    for pattern, replacement in _STRETCH:
        if pattern.match(word):
            return replacement.split()
    return [word]


def _phrases(language: str) -> frozenset[tuple[str, ...]]:
    chosen = PHRASES.get(language)
    pool = chosen if chosen is not None else tuple(p for group in PHRASES.values() for p in group)
    return frozenset(tuple(p.split()) for p in pool)


_BY_LANGUAGE = {language: _phrases(language) for language in PHRASES}
_ANY = _phrases("")


def is_backchannel(text: str | None, language: str) -> bool:
    """True if ``text`` has words and every one belongs to a backchannel of ``language``."""
    tokens = [t for w in words(text) for t in _normal(w)]
    if not tokens:
        return False
    phrases = _BY_LANGUAGE.get(language, _ANY)
    # reachable[i]: tokens[:i] is a sequence of backchannel phrases.
    reachable = [True] + [False] * len(tokens)
    for i in range(len(tokens)):
        if not reachable[i]:
            continue
        for n in range(1, _LONGEST + 1):
            if i + n <= len(tokens) and tuple(tokens[i : i + n]) in phrases:
                reachable[i + n] = True
    return reachable[-1]


def interrupts(text: str | None, language: str) -> bool:
    """True if ``text`` holds words that are not only backchannels: a real interruption."""
    return bool(words(text)) and not is_backchannel(text, language)
