"""Whole calls on the cloud stack: a real aiortc client, the real server, Cartesia STT ->
Claude -> Cartesia TTS (or the OpenAI-compatible STT), all against the fake vendors on
127.0.0.1 (tests/fakes), which speak the vendors' wire formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.app import PROVIDERS
from tests.conftest import SILENCE, LOOPBACK, run_server
from tests.fakes.anthropic_fake import Reply, ToolCall
from tests.support.audio import silence, speech
from tests.support.knowledge import KNOWLEDGE

CLOUD = {"stt": {"provider": "cartesia"}, "llm": {"provider": "anthropic"}, "tts": {"provider": "cartesia"}}
QUESTION = "What time is check-in?"
APOLOGY = "Sorry, I'm having a technical problem right now. Could you ask me again in a moment?"


@pytest.fixture
def cloud(fake, tmp_path):
    """``async with cloud(stt={...}) as srv:`` — a server whose providers talk to ``fake``."""
    (tmp_path / "knowledge.toml").write_text(KNOWLEDGE, encoding="utf-8")

    def start(**sections: dict[str, Any]):  # type: ignore[no-untyped-def]
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in CLOUD.items()}
        merged["webrtc"] = dict(LOOPBACK)
        merged.update({k: dict(v) for k, v in SILENCE.items()})  # espeak speech: the silence rule ends turns
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return run_server(fake.config(root=tmp_path, **merged))

    return start


async def _greeted(peer) -> int:
    peer.send({"type": "call:start", "language": "en"})
    greeting = await peer.wait_for("response:done", timeout=20)
    assert greeting["text"] == "Hi, I'm Sandra." and greeting["interrupted"] is False
    return len(peer.events)


def _ask_aloud(peer, text: str = QUESTION) -> None:
    peer.mic.play(speech(text) + silence(100))


async def _typed_turn_still_works(peer, fake, text: str = "Thanks, and the wifi?") -> dict:
    """After a failure: a typed message is answered by Claude and spoken by Cartesia."""
    fake.anthropic.script(Reply("The wifi is CasaTuria."))
    mark = len(peer.events)
    peer.send({"type": "message", "text": text})
    done = await peer.wait_for("response:done", after=mark, timeout=20)
    assert done == {**done, "text": "The wifi is CasaTuria.", "interrupted": False}
    assert "error" not in [e["type"] for e in peer.events[mark:]]
    assert fake.anthropic.requests[-1].body["messages"][-1] == {"role": "user", "content": text}
    context = list(fake.tts.contexts.values())[-1]
    assert context.transcript == "The wifi is CasaTuria." and context.done and context.chunks_sent > 0
    return done


async def _apologized(peer, mark: int, provider: str) -> tuple[dict, dict]:
    """The failed turn ends with a provider_error event and a spoken apology, and the call listens."""
    error = await peer.wait_for("error", after=mark, timeout=20)
    assert error["code"] == "provider_error" and f"the {provider} service failed" in error["message"]
    done = await peer.wait_for("response:done", after=mark, timeout=20)
    assert done["text"].endswith(APOLOGY) and done["interrupted"] is False
    await peer.wait_for("state", lambda e: e["state"] == "listening", after=mark)
    return error, done


def _visemes(peer, turn_id: int) -> list[dict]:
    return [v for e in peer.events if e["type"] == "viseme" and e["turn_id"] == turn_id for v in e["visemes"]]


# --- a voice turn ---------------------------------------------------------------------------


async def test_voice_turn_through_cartesia_claude_and_cartesia(fake, cloud, peer_factory):
    fake.anthropic.script(Reply("Check-in is from three. See you soon!"))
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        _ask_aloud(peer)

        transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=20)
        assert transcript["text"] == QUESTION
        partials = [e["text"] for e in peer.events[mark:] if e["type"] == "transcript" and not e["final"]]
        assert partials and all(QUESTION.startswith(p) for p in partials)  # while the guest spoke
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert done == {**done, "turn_id": transcript["turn_id"], "text": "Check-in is from three. See you soon!",
                        "interrupted": False}
        deltas = "".join(e["text"] for e in peer.events[mark:] if e["type"] == "response:delta")
        assert deltas == done["text"]

        # Audio and visemes of the reply arrived.
        assert peer.loud_frames(since=transcript["_at"]) > 50  # the fake voice: ~2 s of reply
        visemes = _visemes(peer, done["turn_id"])
        assert len(visemes) > 10 and len({v["id"] for v in visemes}) > 3
        assert [v["t_ms"] for v in visemes] == sorted(v["t_ms"] for v in visemes)
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
        for key in ("eos_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
            assert metrics[key] > 0, key
        assert peer.states()[-4:] == ["user_speaking", "thinking", "speaking", "listening"]

        # What each vendor was sent.
        (stt,) = fake.stt.connections
        assert stt.query == {"model": "ink-whisper", "language": "en", "encoding": "pcm_s16le",
                             "sample_rate": "16000"}
        assert stt.texts == ["finalize"] and stt.closed
        assert 1.0 < len(stt.audio) / 32000 < 3.0  # the utterance at 16 kHz, pre-roll included
        (llm,) = fake.anthropic.requests
        assert llm.completed and llm.body["model"] == "claude-haiku-5-5"
        assert llm.body["messages"] == [{"role": "user", "content": QUESTION}]
        assert "Casa Turia" in llm.body["system"][0]["text"]
        greeting, reply = fake.tts.contexts.values()
        assert reply.transcript == "Check-in is from three. See you soon!" and reply.done
        assert {r["model_id"] for r in reply.requests} == {"sonic-3.5"}
        assert {r["language"] for r in reply.requests} == {"en"}
        assert len(fake.tts.connections) == 1  # one socket for the greeting and the reply

        call = srv.sessions.calls[peer.session_id]
        assert [(m.role, m.text) for m in call.history[-2:]] == [
            ("user", QUESTION), ("assistant", "Check-in is from three. See you soon!")]


async def test_voice_turn_through_an_openai_compatible_stt(fake, cloud, peer_factory):
    fake.openai.transcript = "Where can I park?"
    fake.anthropic.script(Reply("There is a garage next door."))
    async with cloud(stt={"provider": "openai"}) as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        _ask_aloud(peer, "Where can I park?")
        transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=20)
        assert transcript["text"] == "Where can I park?"
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert done["text"] == "There is a garage next door." and done["interrupted"] is False
        assert peer.loud_frames(since=transcript["_at"]) > 30

        (request,) = fake.openai.requests
        assert request.status == 200 and request.headers["Authorization"] == "Bearer " + fake.env()["STT_API_KEY"]
        assert request.fields == {"model": "whisper-1", "language": "en", "response_format": "json"}
        assert (request.channels, request.sample_width, request.frame_rate) == (1, 2, 16000)
        assert 1.0 < request.frames / 16000 < 3.0  # the whole utterance, in one upload
        assert not fake.stt.connections
        assert fake.anthropic.requests[0].body["messages"][-1] == {"role": "user", "content": "Where can I park?"}


# --- a tool call ----------------------------------------------------------------------------


async def test_notify_host_round_trip(fake, cloud, peer_factory, tmp_path):
    fake.stt.transcript = "The shower is leaking."
    call = ToolCall("notify_host", {"message": "The shower in the flat is leaking.", "urgency": "urgent"})
    fake.anthropic.script(Reply("Oh no, I'll tell Marta.", tool_calls=[call]),
                          Reply("Marta knows, she will call you."))
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        _ask_aloud(peer, "The shower is leaking.")
        tool = await peer.wait_for("tool", after=mark, timeout=20)
        assert tool == {**tool, "name": "notify_host",
                        "input": {"message": "The shower in the flat is leaking.", "urgency": "urgent"}}
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert done["text"] == "Oh no, I'll tell Marta. Marta knows, she will call you."
        assert tool["_at"] < done["_at"]

        lines = (tmp_path / "host-inbox.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        entry = json.loads(lines[0])
        assert entry == {**entry, "urgency": "urgent", "message": "The shower in the flat is leaking.",
                         "language": "en"}

        # Claude got the result of the tool and wrote the rest of the reply.
        first, second = fake.anthropic.requests
        assistant, results = second.body["messages"][-2:]
        assert assistant["role"] == "assistant" and assistant["content"][-1]["id"] == call.id
        assert results["content"] == [{"type": "tool_result", "tool_use_id": call.id,
                                       "content": "The host has been notified."}]
        # Both rounds were spoken as one reply, in one Cartesia context.
        reply = list(fake.tts.contexts.values())[-1]
        assert reply.transcript == "Oh no, I'll tell Marta. Marta knows, she will call you." and reply.done


# --- barge-in -------------------------------------------------------------------------------


async def test_barge_in_cancels_the_cartesia_context_and_closes_the_claude_stream(fake, cloud, peer_factory):
    long_reply = ("Check-in is from three in the afternoon. After that you can leave your bags with me, "
                  "pick up the keys from the box by the door, and I will tell you all about the neighbourhood.")
    # Claude writes slowly: the stream is still open when the guest interrupts.
    fake.anthropic.script(Reply(long_reply, delta_delay=0.15), Reply("Of course, I'm listening."))
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        _ask_aloud(peer)
        speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark, timeout=20)
        fake.stt.transcript = "No wait, stop please."  # what the next utterance will be heard as
        await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 25, what="reply audio")
        turn_id = speaking["turn_id"]
        first = fake.anthropic.requests[0]
        context = next(c for c in fake.tts.contexts.values() if c.transcript.startswith("Check-in"))
        assert not first.completed and not context.done

        _ask_aloud(peer, "No wait, stop please.")
        barge = await peer.wait_for("barge-in", after=mark)
        assert barge == {**barge, "turn_id": turn_id, "source": "voice"}
        await fake.until(lambda: context.cancelled and first.client_closed, timeout=5,
                         what="the Cartesia cancel and the Claude stream closed")
        assert not first.completed
        assert {"context_id": context.context_id, "cancel": True} in fake.tts.connections[-1].messages
        quiet = await peer.wait_until(lambda: peer.quiet_since(barge["_at"] - 0.5), what="silence")
        assert quiet - barge["_at"] < 0.3  # silent right away, not after the audio already queued

        done = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn_id, after=mark)
        assert done["interrupted"] is True
        assert long_reply.startswith(done["text"]) and len(done["text"]) < len(long_reply)

        # The interruption is the next turn; Claude is told what the guest actually heard.
        answer = await peer.wait_for("response:done", lambda e: e["turn_id"] > turn_id, after=mark, timeout=20)
        assert answer["text"] == "Of course, I'm listening." and answer["interrupted"] is False
        messages = fake.anthropic.requests[1].body["messages"]
        assert messages[-2] == {"role": "assistant", "content": f"{done['text']} [interrupted by the guest]"}
        assert messages[-1] == {"role": "user", "content": "No wait, stop please."}
        assert len(fake.anthropic.requests) == 2


# --- failures end in an apology, not a dead call ---------------------------------------------


@pytest.mark.parametrize(
    ("failure", "replies", "requests", "said"),
    [
        ("401", [Reply(status=401)], 1, "rejected ANTHROPIC_API_KEY (401)"),
        ("529", [Reply(status=529, retry_after=0)] * 3, 3, "overloaded_error (HTTP 529)"),
        ("overloaded mid-stream", [Reply("Check-in is from three. And", error_after=4)], 1,
         "overloaded_error (mid-stream)"),
    ],
)
async def test_claude_failure_ends_in_a_spoken_apology(fake, cloud, peer_factory, failure, replies, requests, said):
    fake.anthropic.script(*replies)
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        if failure == "overloaded mid-stream":
            _ask_aloud(peer)
        else:  # typed, to keep the test short: the voice path to Claude is the same
            peer.send({"type": "message", "text": QUESTION})
        error, done = await _apologized(peer, mark, "anthropic")
        assert said in error["message"] and fake.env()["ANTHROPIC_API_KEY"] not in error["message"]
        if failure == "overloaded mid-stream":  # what was said stays said, then the apology (no retry)
            assert done["text"] == "Check-in is from three. " + APOLOGY
        else:
            assert done["text"] == APOLOGY
        assert len(fake.anthropic.requests) == requests  # 401: not retried; 529: retried twice
        apology = list(fake.tts.contexts.values())[-1]
        assert apology.transcript == APOLOGY and apology.done  # spoken by Cartesia
        assert peer.loud_frames(since=error["_at"]) > 50
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
        assert metrics["interrupted"] is False

        await _typed_turn_still_works(peer, fake)
        call = srv.sessions.calls[peer.session_id]
        assert [m.role for m in call.history] == ["assistant", "user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("where", ["mid_utterance", "on_finalize"])
async def test_stt_socket_drop_ends_in_a_spoken_apology(fake, cloud, peer_factory, where):
    if where == "mid_utterance":
        fake.stt.drop_after_bytes = 16000  # half a second into the utterance
    else:
        fake.stt.drop_on_finalize = True
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        _ask_aloud(peer)
        error, done = await _apologized(peer, mark, "cartesia")
        assert "socket" in error["message"]
        assert done["text"] == APOLOGY
        # Sandra is listening again (not stuck in the caller's broken turn).
        await peer.wait_for("state", lambda e: e["state"] == "listening", after=peer.events.index(done))
        assert not [e for e in peer.events[mark:] if e["type"] == "transcript" and e["final"]]
        (stt,) = fake.stt.connections
        assert stt.dropped and stt.closed
        assert not fake.anthropic.requests  # nothing to answer
        assert peer.loud_frames(since=error["_at"]) > 50

        fake.stt.drop_after_bytes, fake.stt.drop_on_finalize = None, False
        await _typed_turn_still_works(peer, fake)
        if where == "on_finalize":
            return
        # The next utterance gets a fresh STT socket.
        mark = len(peer.events)
        fake.anthropic.script(Reply("From three."))
        _ask_aloud(peer)
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert done["text"] == "From three." and len(fake.stt.connections) == 2


@pytest.mark.parametrize("when", ["first chunk", "mid-reply"])
async def test_cartesia_tts_error_falls_back_to_espeak(fake, cloud, peer_factory, when):
    reply = "Check-in is from three in the afternoon. Enjoy Valencia!"
    fake.anthropic.script(Reply(reply))
    async with cloud() as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        if when == "first chunk":
            fake.tts.fail()  # the next context answers model_sunsetted
        else:
            fake.tts.fail_after_chunks = 3  # chunks of the reply's own context
        _ask_aloud(peer)
        transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=20)
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        # The guest hears the whole answer, in the offline voice: no apology needed.
        assert done["text"] == reply and done["interrupted"] is False
        assert "error" not in [e["type"] for e in peer.events[mark:]]
        context = list(fake.tts.contexts.values())[-1]
        assert context.errored and not context.done
        assert context.chunks_sent == (0 if when == "first chunk" else 3)
        assert srv.app[PROVIDERS].tts._fallback is not None  # espeak was started for it
        assert peer.loud_frames(since=transcript["_at"]) > 75  # ~2 s of espeak speech (and any Cartesia part)
        visemes = _visemes(peer, done["turn_id"])
        assert len(visemes) > 20 and len({v["id"] for v in visemes}) > 3

        await _typed_turn_still_works(peer, fake)  # the next reply is Cartesia's again


# --- per-turn metrics -----------------------------------------------------------------------


STT_DELAY_S, FIRST_TOKEN_DELAY_S, FIRST_BYTE_DELAY_S = 0.150, 0.200, 0.120
SLACK_MS = 40  # our own share: loopback HTTP/WebSocket, JSON, the event loop of a loaded 2-core box


async def test_turn_metrics_reflect_the_vendors_delays(fake, cloud, peer_factory):
    fake.stt.delay = STT_DELAY_S  # between `finalize` and the final transcript
    fake.anthropic.first_token_delay = FIRST_TOKEN_DELAY_S
    fake.tts.first_byte_delay = FIRST_BYTE_DELAY_S  # before each context's first chunk
    fake.anthropic.script(Reply("Hello again."), Reply("From three. See you then!"))
    async with cloud() as srv:
        peer = await peer_factory(srv)
        await _greeted(peer)  # opens the Cartesia TTS socket

        # The first request of the process also pays for the SDK's first use.
        mark = len(peer.events)
        peer.send({"type": "message", "text": "Hello"})
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        cold = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
        assert cold["llm_ttft_ms"] >= FIRST_TOKEN_DELAY_S * 1000 and cold["tts_ttfb_ms"] >= FIRST_BYTE_DELAY_S * 1000

        mark = len(peer.events)
        _ask_aloud(peer)
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
        delays = {"stt_ms": STT_DELAY_S, "llm_ttft_ms": FIRST_TOKEN_DELAY_S, "tts_ttfb_ms": FIRST_BYTE_DELAY_S}
        for key, delay in delays.items():
            assert delay * 1000 <= metrics[key] <= delay * 1000 + SLACK_MS, (key, metrics[key])


# --- preemptive generation (smart end of turn) --------------------------------------------------

SMART = {"detector": "smart"}  # the fake's transcripts end in "the": the words say "unfinished"


async def test_claude_starts_on_the_speculative_transcript_and_is_heard_when_the_turn_ends(fake, cloud, peer_factory):
    fake.stt.transcript = "Could you tell me about the"
    fake.anthropic.script(Reply("Of course, the flat has two bedrooms."))
    async with cloud(turn=SMART) as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        peer.mic.play(speech("Could you tell me about the") + silence(2600))
        final = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=20)
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert done == {**done, "turn_id": final["turn_id"], "text": "Of course, the flat has two bedrooms.",
                        "interrupted": False}
        # Claude was asked at the first silence, well before the turn ended (max_silence_ms = 2 s) ...
        (llm,) = fake.anthropic.requests
        assert llm.body["messages"][-1] == {"role": "user", "content": "Could you tell me about the"}
        assert llm.at < final["_at"] - 1.0
        # ... and nothing of the reply reached the caller before it did.
        turn_events = [i for i, e in enumerate(peer.events) if e.get("turn_id") == final["turn_id"]
                       and e["type"] in ("response:delta", "viseme")]
        assert turn_events and min(turn_events) > peer.events.index(final)
        assert peer.loud_frames(since=final["_at"]) > 50
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == final["turn_id"], after=mark)
        assert metrics["preemptive"] is True and metrics["eot_verdicts"] == ["incomplete", "max_silence"]


async def test_a_preemptive_reply_is_dropped_unheard_and_its_tools_wait_for_the_turn(fake, cloud, peer_factory, tmp_path):
    fake.stt.transcript = "The shower is leaking in the"
    call = ToolCall("notify_host", {"message": "The shower is leaking.", "urgency": "urgent"})
    fake.anthropic.script(Reply("DROPPED, I'll tell Marta.", tool_calls=[call]),
                          Reply("I'll tell Marta.", tool_calls=[call]), Reply("She knows."))
    async with cloud(turn=SMART) as srv:
        peer = await peer_factory(srv)
        mark = await _greeted(peer)
        # A pause long enough for a speculative transcript (and a held reply), then more words.
        peer.mic.play(speech("The shower is leaking") + silence(900) + speech("in the bathroom") + silence(2600))
        done = await peer.wait_for("response:done", after=mark, timeout=30)
        assert done["text"] == "I'll tell Marta. She knows." and done["interrupted"] is False
        said = "".join(e["text"] for e in peer.events[mark:] if e["type"] == "response:delta")
        assert said == done["text"]  # the dropped reply never reached the caller
        assert [e["input"] for e in peer.events[mark:] if e["type"] == "tool"] == [call.input]
        assert len(fake.anthropic.requests) == 3  # the dropped one, then the reply's two rounds
        lines = (tmp_path / "host-inbox.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1  # the dropped reply's notify_host never ran
