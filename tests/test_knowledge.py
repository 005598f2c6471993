"""The knowledge base: loading, retrieval under transcription noise, the LLM prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import knowledge
from server.config import ROOT
from server.errors import ConfigError
from server.providers.concierge import MATCH_THRESHOLD

KB_FILE = ROOT / "knowledge.toml"

# Questions as a recogniser might hand them over: no punctuation or accents, split or
# misheard words, fillers. None is copied from knowledge.toml. The first 26 were written
# before tuning the scorer (and two keywords were added after seeing them); the last 14
# were written afterwards as a held-out check, and scored 13/14 on first run.
NOISY = [
    ("what time is checking", "en", "check_in"),
    ("hi um what's the wi-fi password", "en", "wifi"),
    ("is there internet here", "en", "wifi"),
    ("how do i get into the building", "en", "access"),
    ("what's the code for the key box", "en", "access"),
    ("where can i park my car", "en", "parking"),
    ("how far is the beach from here", "en", "beach"),
    ("any good places to eat paella nearby", "en", "restaurants"),
    ("where's the closest supermarket", "en", "supermarket"),
    ("what time do we need to check out", "en", "check_out"),
    ("how do i get to the air port", "en", "airport"),
    ("what number do i call in an emergency", "en", "emergency"),
    ("can i smoke on the balcony", "en", "smoking"),
    ("where do i throw the garbage", "en", "rubbish"),
    ("how do i turn on the air con", "en", "climate"),
    ("is my dog allowed", "en", "pets"),
    ("¿a qué hora es la entrada?", "es", "check_in"),
    ("cual es la contraseña del wi fi", "es", "wifi"),
    ("donde puedo aparcar el coche", "es", "parking"),
    ("a que hora tenemos que dejar el apartamento", "es", "check_out"),
    ("como llego al aeropuerto", "es", "airport"),
    ("donde se tira la basura", "es", "rubbish"),
    ("hay una farmacia cerca", "es", "supermarket"),
    ("como funciona la calefaccion", "es", "climate"),
    ("se puede fumar en el piso", "es", "smoking"),
    ("cual es el codigo de la puerta", "es", "access"),
    # held out
    ("hey sandra whats the password for the internet", "en", "wifi"),
    ("when do we have to be out of the flat", "en", "check_out"),
    ("were locked out how do we open the door", "en", "access"),
    ("which bus goes to the center", "en", "transport"),
    ("is there a hospital near here", "en", "emergency"),
    ("where are the clean towels", "en", "laundry"),
    ("can we leave our suitcases after we check out", "en", "luggage"),
    ("how do i call lucia", "en", "host"),
    ("a que hora podemos llegar", "es", "check_in"),
    ("donde esta la playa", "es", "beach"),
    ("hay algun supermercado abierto el domingo", "es", "supermarket"),
    ("podemos traer al gato", "es", "pets"),
    ("donde hay un buen restaurante de paella", "es", "restaurants"),
    ("como se enciende el aire acondicionado", "es", "climate"),
]

# Nothing in the knowledge base answers these.
UNKNOWN = [
    "what's the weather tomorrow",
    "who won the football match yesterday",
    "can you recommend a good dentist",
    "¿cuál es la capital de Francia?",
    "tell me a joke",
    "is there a gym nearby",
    "¿qué tiempo hará mañana?",
    "how old is the universe",
]


@pytest.fixture(scope="module")
def kb() -> knowledge.KnowledgeBase:
    return knowledge.load(KB_FILE)


def test_shipped_example_covers_the_basics(kb: knowledge.KnowledgeBase) -> None:
    ids = {e.id for e in kb.entries}
    assert {"check_in", "check_out", "wifi", "address", "access", "parking", "beach", "restaurants",
            "supermarket", "transport", "airport", "emergency", "noise", "smoking", "pets", "rubbish",
            "climate", "host"} <= ids
    assert "112" in kb.get("emergency").answer_in("en")
    assert "Sandra" in kb.greeting("en") and "Sandra" in kb.greeting("es")
    assert kb.greeting("fr") == kb.greeting("en")


@pytest.mark.parametrize(
    "question, expected",
    [
        ("what time is checking", "check_in"),
        ("wifi password", "wifi"),
        ("wi-fi", "wifi"),
        ("internet", "wifi"),
        ("¿a qué hora es la entrada?", "check_in"),
    ],
)
def test_required_matches(kb: knowledge.KnowledgeBase, question: str, expected: str) -> None:
    (entry, score), *_ = kb.search(question, "en", k=3)
    assert entry.id == expected
    assert score >= MATCH_THRESHOLD


def test_top1_accuracy_on_noisy_questions(kb: knowledge.KnowledgeBase) -> None:
    misses = []
    for question, language, expected in NOISY:
        (entry, score), *_ = kb.search(question, language, k=1)
        if entry.id != expected or score < MATCH_THRESHOLD:
            misses.append((question, entry.id, score))
    accuracy = 1 - len(misses) / len(NOISY)
    # Measured: 39/40 (the suitcase question ties between luggage and check_out).
    assert accuracy >= 0.9, misses


def test_unknown_questions_mostly_score_below_the_threshold(kb: knowledge.KnowledgeBase) -> None:
    above = [(q, kb.search(q, "en", k=1)[0]) for q in UNKNOWN]
    above = [(q, e.id, s) for q, (e, s) in above if s >= MATCH_THRESHOLD]
    # Measured: only "recommend a good dentist" passes (it looks like "recommend a restaurant").
    assert len(above) <= 1, above


def test_search_ranks_and_limits(kb: knowledge.KnowledgeBase) -> None:
    results = kb.search("where is the beach", "en", k=4)
    assert len(results) == 4
    scores = [s for _, s in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    assert kb.search("", "en", k=2)[0][1] == 0
    assert kb.search("the a is of", "en", k=2)[0][1] == 0


def test_fold_joins_hyphens_and_drops_accents() -> None:
    assert knowledge.tokens("¿Cuál es la CONTRASEÑA del Wi-Fi?") == ["cual", "es", "la", "contrasena", "del", "wifi"]


def test_as_prompt_holds_every_answer_in_the_language(kb: knowledge.KnowledgeBase) -> None:
    for language in ("en", "es"):
        prompt = kb.as_prompt(language)
        assert kb.host in prompt and kb.name in prompt
        for entry in kb.entries:
            assert entry.answer_in(language) in prompt
    assert "contraseña" in kb.as_prompt("es") and "password" in kb.as_prompt("en")
    assert len(kb.as_prompt("en")) < 8000  # compact: a few thousand characters


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kb.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[property]
name = "Flat"
host = "Ana"
city = "Valencia"
[greeting]
en = "Hi, I'm Sandra."
es = "Hola, soy Sandra."
[[entry]]
id = "wifi"
questions.en = ["What's the wifi password?"]
questions.es = ["¿Cuál es la clave del wifi?"]
keywords.en = ["wifi"]
keywords.es = ["wifi"]
answer.en = "It is secret."
answer.es = "Es secreta."
"""


def test_load_small_file(tmp_path: Path) -> None:
    kb = knowledge.load(_write(tmp_path, GOOD))
    assert kb.host == "Ana"
    assert kb.search("wifi", "es", k=1)[0][0].answer_in("es") == "Es secreta."


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "file not found"),
        ("[property\nname=", "not valid TOML"),
        (GOOD.replace('answer.es = "Es secreta."', ""), "wifi: answer.es is missing"),
        (GOOD.replace('id = "wifi"', ""), "entry #1 has no id"),
        (GOOD.replace('host = "Ana"', ""), "[property] host is missing"),
        (GOOD.split("[[entry]]")[0], "no [[entry]] tables"),
        (GOOD + "[[entry]]" + GOOD.split("[[entry]]")[1], "appears twice"),
    ],
)
def test_load_errors_name_the_config_key(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "missing.toml" if text is None else _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        knowledge.load(path)
    assert "[knowledge] file" in str(info.value)
    assert message in str(info.value)
