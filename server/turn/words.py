"""Words of a transcript, as the turn rules compare them (one tokenizer for every cue).

Whisper writes punctuation, capitals and sometimes hyphenated sounds ("Mm-hmm.", "Uh huh",
"Vale, vale."). :func:`words` lowercases, drops punctuation and splits on spaces and
hyphens; apostrophes inside a word stay ("what's"). Accents stay too: in Spanish they tell
words apart ("si" if / "sí" yes, "que" that / "qué" what); :func:`fold` removes them where
they must not matter (backchannels).
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str | None) -> list[str]:
    """Lowercase words of ``text``, punctuation and hyphens dropped."""
    if not text:
        return []
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").lower()
    return _WORD.findall(text)


def fold(word: str) -> str:
    """``word`` without accents ("ajá" -> "aja", "sí" -> "si")."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))
