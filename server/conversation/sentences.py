"""Cutting a streamed reply into pieces worth sending to TTS. Pure.

Text arrives in LLM-sized pieces; :meth:`SentenceSplitter.feed` returns the sentences
completed so far. The first piece of a reply may be a clause (cut at a comma, colon or
dash once it has ``first_clause_words`` words) so the first audio starts sooner.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…。]+[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:—–]\s+")
_ABBREVIATIONS = ("e.g.", "i.e.", "Mr.", "Mrs.", "Dr.", "Sr.", "Sra.", "St.", "No.", "approx.", "etc.", "p.m.", "a.m.")


class SentenceSplitter:
    def __init__(self, first_clause_words: int = 4, max_chars: int = 250) -> None:
        self._buffer = ""
        self._first = True
        self._first_clause_words = first_clause_words
        self._max_chars = max_chars

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                out.append(piece)
                self._first = False
        return out

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer.strip(), ""
        return [piece] if piece else []

    def _next_cut(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            if self._buffer[: match.start() + 1].endswith(_ABBREVIATIONS):
                continue
            return match.end()
        if self._first:
            for match in _CLAUSE_END.finditer(self._buffer):
                if len(self._buffer[: match.start()].split()) >= self._first_clause_words:
                    return match.end()
        if len(self._buffer) > self._max_chars:
            space = self._buffer.rfind(" ", 0, self._max_chars)
            return space + 1 if space > 0 else self._max_chars
        return None
