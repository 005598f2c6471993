"""The pure core, synchronously: segmenter, state machine, sentences, echo guard, config."""

from __future__ import annotations

import pytest

from server import config as configuration
from server.conversation.sentences import SentenceSplitter
from server.errors import ConfigError
from server.media.echo import EchoGuard
from server.media.segmenter import SpeechAudio, SpeechEnd, SpeechSegmenter, SpeechStart, SustainedSpeech

F = bytes(640)


def run(segmenter: SpeechSegmenter, pattern: str, t0: float = 0.0) -> list[tuple[str, float]]:
    """Feed frames ('x' voiced, '.' silent, 20 ms apart); name the events with their times."""
    out = []
    for i, c in enumerate(pattern):
        for ev in segmenter.push(F, c == "x", t0 + i * 0.02):
            out.append((type(ev).__name__, round(ev.at, 2)))
    return [e for e in out if e[0] != "SpeechAudio"]


def test_segmenter_needs_start_ms_of_voice_and_ends_after_silence():
    seg = SpeechSegmenter(start_ms=60, end_silence_ms=100, pre_roll_ms=40, barge_in_ms=80)
    assert run(seg, "x.x.xx.") == []  # blips never make 60 ms in a row
    events = run(seg, "xxxx" + "." * 5 + "...", t0=1.0)
    assert events == [("SpeechStart", 1.04), ("SustainedSpeech", 1.06), ("SpeechEnd", 1.16)]


def test_segmenter_pre_roll_and_audio():
    seg = SpeechSegmenter(start_ms=60, end_silence_ms=60, pre_roll_ms=40, barge_in_ms=80)
    frames = [bytes([i]) * 640 for i in range(10)]
    events = []
    for i, frame in enumerate(frames):
        voiced = 3 <= i <= 5
        events += seg.push(frame, voiced, i * 0.02)
    start = next(e for e in events if isinstance(e, SpeechStart))
    assert start.audio == b"".join(frames[1:6])  # 40 ms pre-roll + 60 ms of voice
    assert start.onset_at == pytest.approx(0.06)
    audio = [e.audio for e in events if isinstance(e, SpeechAudio)]
    assert audio == frames[6:9]
    end = next(e for e in events if isinstance(e, SpeechEnd))
    assert end.last_voiced_at == pytest.approx(0.10) and end.at == pytest.approx(0.16)


def test_segmenter_sustained_speech_once_per_segment():
    seg = SpeechSegmenter(start_ms=40, end_silence_ms=200, pre_roll_ms=0, barge_in_ms=80)
    names = [n for n, _ in run(seg, "xxx.xxxxx.xxxxx" + "." * 10)]
    assert names == ["SpeechStart", "SustainedSpeech", "SpeechEnd"]


def test_sentence_splitter_streams_sentences_and_a_first_clause():
    s = SentenceSplitter(first_clause_words=4)
    text = "Check-in is from three, in the afternoon. The code is 4521, e.g. for the door! Bye"
    out = []
    for i in range(0, len(text), 3):
        out += s.feed(text[i : i + 3])
    out += s.flush()
    assert out == ["Check-in is from three,", "in the afternoon.", "The code is 4521, e.g. for the door!", "Bye"]


def test_sentence_splitter_cuts_very_long_text():
    s = SentenceSplitter(max_chars=50)
    out = s.feed("word " * 30)
    assert out and all(len(p) <= 50 for p in out)


def test_echo_guard_starts_from_the_prior():
    guard = EchoGuard(return_db=-10, margin_db=6, window_s=0.5)
    assert not guard.is_echo(0.0, 100.0)  # Sandra silent: anything voiced is the caller
    guard.played(1.0, 4000.0)
    assert guard.is_echo(1.2, 1500.0)  # quieter than her voice through a speaker: echo
    assert not guard.is_echo(1.2, 3000.0)  # louder than any echo could be: the caller
    assert not guard.is_echo(1.6, 1500.0)  # her voice has left the echo window


def _speak(guard: EchoGuard, seconds: float, inbound_ratio: float, t0: float = 0.0) -> float:
    """Sandra plays; her echo comes back at ``inbound_ratio``, a third of it unvoiced."""
    t, i = t0, 0
    while t < t0 + seconds:
        guard.played(t, 4000.0)
        guard.is_echo(t, 4000.0 * inbound_ratio, voiced=i % 3 != 0)
        t += 0.02
        i += 1
    return t


def test_echo_guard_learns_a_clean_line():
    guard = EchoGuard(return_db=-10, margin_db=6)
    t = _speak(guard, 2.0, inbound_ratio=0.001)  # echo cancellation took it all
    assert guard.echo_level < 0.01
    assert not guard.is_echo(t, 4000.0 * 0.1)  # a caller 20 dB below Sandra still interrupts


def test_echo_guard_learns_a_loud_speaker():
    guard = EchoGuard(return_db=-10, margin_db=6)
    t = _speak(guard, 2.0, inbound_ratio=0.3)  # the speakerphone returns -10 dB
    assert 0.25 < guard.echo_level < 0.35
    assert guard.is_echo(t, 4000.0 * 0.3)  # her own voice: ignored
    assert not guard.is_echo(t, 4000.0 * 0.9)  # the caller, close to the microphone


def test_echo_guard_does_not_learn_from_the_caller():
    guard = EchoGuard(return_db=-10, margin_db=6)
    t = _speak(guard, 2.0, inbound_ratio=0.001)
    for _ in range(3):  # three barge-ins, five loud voiced frames each, while she plays
        onset = t
        for _ in range(5):
            guard.played(t, 4000.0)
            assert not guard.is_echo(t, 4000.0, voiced=True)
            t += 0.02
        guard.forget_since(onset)
        t = _speak(guard, 0.3, inbound_ratio=0.001, t0=t)
    assert guard.echo_level < 0.01
    # Nor from what follows her last word: the caller answering her.
    t += 0.2
    for _ in range(30):
        guard.is_echo(t, 4000.0, voiced=False)
        t += 0.02
    assert guard.echo_level < 0.01


def test_echo_guard_does_not_learn_the_start_of_a_barge_in():
    guard = EchoGuard(return_db=-10, margin_db=6)
    t = _speak(guard, 0.6, inbound_ratio=0.0)  # just enough to have learned a clean line
    for _ in range(6):  # the caller starts talking over her, as loud as she is
        guard.played(t, 4000.0)
        assert not guard.is_echo(t, 4000.0 * 0.8, voiced=True)
        t += 0.02
    assert guard.echo_level < 0.01


def test_config_env_overrides_and_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[vad]\nend_silence_ms = 400\n[webrtc]\nice_servers = [{urls = "turn:t:3478", username = "u", credential = "p"}]\n')
    c = configuration.load(path, {"SANDRA_PORT": "9000", "MAX_SESSIONS": "7", "SESSION_TTL": "60",
                                   "SANDRA_VAD_AGGRESSIVENESS": "3", "ANTHROPIC_API_KEY": "sk-secret"})
    assert (c.server.port, c.server.max_sessions, c.server.session_ttl_s) == (9000, 7, 60.0)
    assert (c.vad.end_silence_ms, c.vad.aggressiveness) == (400, 3)
    assert c.webrtc.ice_servers[0].urls == ("turn:t:3478",) and c.webrtc.ice_servers[0].credential == "p"
    assert c.resolved().llm.provider == "anthropic" and c.resolved().stt.provider == "local"
    assert "sk-secret" not in repr(c)
    for text, key in [("[vad]\nstart_ms = 55\n", "start_ms"), ("[vad]\nnope = 1\n", "nope"), ("[bogus]\n", "bogus")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=key):
            configuration.load(path, {})
    with pytest.raises(ConfigError, match="not found"):
        configuration.load(tmp_path / "missing.toml", {})


def test_the_shipped_config_toml_loads_and_names_every_key():
    from dataclasses import fields

    import tomllib

    path = configuration.ROOT / "config.toml"
    raw = tomllib.loads(path.read_text())
    config = configuration.load(path, {})
    for section in raw:
        documented = set(raw[section])
        known = {f.name for f in fields(getattr(config, section))}
        assert documented == known, section


def test_played_text_is_what_the_caller_heard():
    from server.conversation.reply import Reply

    reply = Reply(1, spoken=[(100, "One two three."), (200, "Four five six seven.")], current="Eight nine.")
    heard = [reply.played_text(played, 250) for played in (0, 50, 100, 150, 225, 250)]
    assert heard == [
        "",
        "One",
        "One two three.",
        "One two three. Four five",
        "One two three. Four five six seven. Eight",
        "One two three. Four five six seven. Eight nine.",
    ]
