"""IPA phonemes to the Oculus/Meta 15-viseme set, and timing helpers.

Ids: 0 sil, 1 PP, 2 FF, 3 TH, 4 DD, 5 kk, 6 CH, 7 SS, 8 nn, 9 RR, 10 aa, 11 E, 12 ih,
13 oh, 14 ou. Stress and length marks are stripped; diphthongs split into two visemes
sharing the phoneme's time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .providers.base import Viseme

NAMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")

_SINGLE: dict[str, int] = {}
for _id, _chars in {
    1: "pbmɱ",
    2: "fvɸβ",
    3: "θð",
    4: "tdʈɖ",
    5: "kgŋxhɣqɢχʁɦʔc",
    6: "ʃʒʝɕʑç",
    7: "sz",
    8: "nlɲʎɳɫɭ",
    9: "rɾɹɻʀ",
    10: "aɑæʌɐä",
    11: "eɛəɜɚɝø",
    12: "iɪjɨyʏ",
    13: "oɔɒ",
    14: "uʊwɯɥ",
}.items():
    for _c in _chars:
        _SINGLE[_c] = _id

# Multi-character phonemes that map to one viseme.
_CLUSTERS = {"tʃ": 6, "dʒ": 6, "ts": 7, "dz": 7, "t͡ʃ": 6, "d͡ʒ": 6}
_IGNORED = set("ˈˌːˑ̩̯͡‿ .-_|'\"^")


def phoneme_to_visemes(phoneme: str) -> list[int]:
    """Viseme ids for one IPA phoneme ("aɪ" -> [10, 12], "tʃ" -> [6], "ˈa:" -> [10])."""
    p = "".join(c for c in phoneme if c not in _IGNORED)
    if not p:
        return []
    if p in _CLUSTERS:
        return [_CLUSTERS[p]]
    out: list[int] = []
    i = 0
    while i < len(p):
        if p[i : i + 2] in _CLUSTERS:
            out.append(_CLUSTERS[p[i : i + 2]])
            i += 2
            continue
        vid = _SINGLE.get(p[i])
        if vid is not None and (not out or out[-1] != vid or vid >= 10):
            out.append(vid)
        i += 1
    return out


def from_phonemes(
    phonemes: Sequence[str], starts_s: Sequence[float], ends_s: Sequence[float], *, offset_ms: float = 0.0
) -> list[Viseme]:
    """Visemes for phonemes timed in seconds (Cartesia's ``phoneme_timestamps``)."""
    out: list[Viseme] = []
    for ph, start, end in zip(phonemes, starts_s, ends_s):
        ids = phoneme_to_visemes(ph)
        if not ids:
            continue
        dur = max(0.0, (end - start) * 1000) / len(ids)
        for k, vid in enumerate(ids):
            out.append(Viseme(vid, round(offset_ms + start * 1000 + k * dur, 1), round(dur, 1)))
    return out


def from_words(words: Sequence[str], starts_s: Sequence[float], ends_s: Sequence[float]) -> list[Viseme]:
    """Rough visemes from word timings when no phonemes are given: letters spread evenly."""
    out: list[Viseme] = []
    for word, start, end in zip(words, starts_s, ends_s):
        letters = [c for c in word.lower() if c.isalpha()]
        ids = [vid for c in letters for vid in phoneme_to_visemes(_LETTER.get(c, c))]
        if not ids:
            continue
        dur = max(0.0, (end - start) * 1000) / len(ids)
        out.extend(Viseme(vid, round(start * 1000 + k * dur, 1), round(dur, 1)) for k, vid in enumerate(ids))
    return out


_LETTER = {"c": "k", "q": "k", "y": "j", "ñ": "ɲ", "x": "ks", "é": "e", "á": "a", "í": "i", "ó": "o", "ú": "u"}


def shift(visemes: Iterable[Viseme], offset_ms: float) -> list[Viseme]:
    return [Viseme(v.id, v.t_ms + offset_ms, v.dur_ms) for v in visemes]
