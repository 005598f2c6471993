"""Text evidence that a turn is not finished, from the (speculative) transcript.

An utterance whose last word is an article, a preposition, a conjunction or a possessive
("I would like to know the", "Is there a supermarket and", "Quiero saber si") is not
finished, whatever punctuation Whisper put after it.

An utterance made only of words that open what comes next ("Wait,", "Hold on", "Sorry",
"Um", "Espera", "Perdona", "A ver") is not finished either: a guest who says "Wait, is
there parking?" pauses at the comma, and once the speculative transcript came fast enough
(the short Whisper window) that pause alone ended the turn at "Wait." If nothing follows,
the turn still ends at ``max_silence_ms``. With a question mark ("Sorry?", "¿Perdón?") it
asks her to say it again: a whole turn.

A wh-question that stops before its verb ("What time is", "Where can I", "¿Dónde puedo")
is not finished: Whisper often writes these with a question mark at a pause, and the audio
model, hearing a rising question, may agree. Only short ones for "is"/"can"... alone
("What do you think it is?" is whole); "is it" ends "What time is it?", so "it" never counts.

Other cues were measured and left out (bench/eot.py): a trailing "..." from Whisper only
appeared where the audio model or this rule already said "unfinished", so it adds
nothing there; the set holds no hesitations ("um", "eh"), so a filler rule could not be
measured and is not in.

Words that often end a finished sentence are left out on purpose, though they are
prepositions too: "in" / "on" / "up" / "out" ("What time can I check in?"), "from" ("Where
are you from?"), "about" ("What is it about?"), "at", "by", "like", "so", "that", "this";
Spanish "qué" (accented: "¿Por qué?"), "sí" (yes), "este" (a demonstrative too), "cuando",
"donde", "como" (Whisper may drop the accent of "¿cuándo?"; "como" is also "I eat").

:func:`unfinished` is pure and cheap (microseconds): call it anywhere.
"""

from __future__ import annotations

from .words import words

# Per language: words after which a sentence cannot end.
DANGLING: dict[str, frozenset[str]] = {
    "en": frozenset(
        """the a an to of for with into onto and or but nor if because than whether
        my your our their its""".split()
    ),
    "es": frozenset(
        """el la los las lo un una unos unas de del al a que y e o u ni si pero porque
        para con en por sin sobre entre hasta desde hacia según mi mis tu tus su sus
        nuestro nuestra nuestros nuestras""".split()
    ),
}


# Per language: words that, alone, announce more to come (an opener, a filler).
OPENERS: dict[str, frozenset[str]] = {
    "en": frozenset("wait hold on hang sorry excuse me um uh er erm hmm well so and also actually hey".split()),
    "es": frozenset(
        """espera espere un momento momentito perdona perdone perdón disculpa disculpe oye oiga
        a ver eh em este bueno pues entonces mira mire y también""".split()
    ),
}


# Per language: a question that opens with one of these and stops at a verb that needs
# more ("What time is", "Where can I", "¿Dónde puedo") is not finished.
QUESTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("what where when how who which why".split()),
    "es": frozenset("qué dónde cuándo cómo cuál cuáles quién cuánto cuánta cuántos cuántas donde cuando".split()),
}
# English: a short wh-question ending in one of these has no verb yet ("Where is", "What time
# is"); "What do you think it is?" is longer than SHORT_QUESTION words and left alone.
AUXILIARIES = frozenset("is are was were am do does did can could should would will may might must shall".split())
SUBJECTS = frozenset("i we you they he she it".split())
SHORT_QUESTION = 4
# Spanish: a modal verb still waiting for its infinitive ("¿Dónde puedo", "¿Cómo podemos").
MODALS_ES = frozenset("puedo puedes puede podemos pueden podría podríamos quiero quisiera queremos debo debemos".split())


def _verb_missing(found: list[str], language: str) -> str | None:
    if len(found) < 2 or found[0] not in QUESTION_WORDS.get(language, frozenset()):
        return None
    last, before = found[-1], found[-2]
    if language == "en":
        if last in AUXILIARIES and len(found) <= SHORT_QUESTION:
            return f"a question that stops at {last!r}"
        if last in SUBJECTS and before in AUXILIARIES and last != "it":  # "Where can I", not "What time is it"
            return f"a question that stops at {before + ' ' + last!r}"
    if language == "es" and last in MODALS_ES:
        return f"a question that stops at {last!r}"
    return None


def unfinished(text: str | None, language: str) -> str | None:
    """Why ``text`` cannot be a whole turn (a short reason for logs and metrics), or None."""
    found = words(text)
    if not found:
        return None
    if found[-1] in DANGLING.get(language, frozenset()):
        return f"ends with {found[-1]!r}"
    if set(found) <= OPENERS.get(language, frozenset()) and not (text or "").rstrip().endswith("?"):
        return "only an opener"  # "Sorry?" asks her to say it again: a whole turn
    return _verb_missing(found, language)
