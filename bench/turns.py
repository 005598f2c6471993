"""Turn-taking through the real offline pipeline, measured at a real client (issue 10).

    .venv/bin/python -m bench.turns [--quick] [--repeat N]

The server runs in its own process with the embedded default providers (local Whisper
tiny.en on its short window, the concierge over knowledge.toml, espeak-ng) and ``[turn]
detector = "smart"`` (preemptive generation on, as by default);
the caller is a real aiortc peer (Sandra's jitter buffer, ``fast_receive``) speaking
Piper's joe voice (en_US medium, a neural voice, noise sampled: each reading differs a
little). Nothing leaves the machine.

1. voice-to-voice: short complete questions the knowledge base answers; time from the
   caller's last voiced frame sent to the first reply frame with energy received. The
   same questions on a second server with ``detector = "silence"`` (the old rule, ``[vad]
   end_silence_ms`` = 500), question by question in alternation so both meet the same
   machine load. One unmeasured spoken turn first on each (Whisper's first run is cold).
2. hesitations: a sentence in two Piper pieces with 600-1500 ms of silence between; one
   turn (one final transcript, one reply) or cut in two; and whether Whisper heard the
   second piece's key word in that one transcript.
3. over Sandra (a long typed-question reply playing): noise bursts (the scripted voice,
   and band-passed noise with a cough's envelope, 150-400 ms), backchannels ("uh-huh",
   "yeah", ...) -> does she resume; real interruptions ("Wait, is there parking?") ->
   confirmed and answered (the answer's text names the entry). After each trial the reply
   is cut with a client ``barge-in`` (hard stop) so the next one starts at once.
4. barge-in: the caller's first voiced frame sent over Sandra -> her audio silent at the
   client (the pause), over every trial of 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.providers.scripted import TTS_RATE, synthetic_voice
from tests.support.audio import resample, silence
from tests.support.peer import RATE, ClientPeer

from .common import percentiles, save, server_process, table

OFFLINE_ENV = {
    "SANDRA_STT_PROVIDER": "local",
    "SANDRA_LLM_PROVIDER": "concierge",
    "SANDRA_TTS_PROVIDER": "espeak",
    "SANDRA_TURN_DETECTOR": "smart",
    "SANDRA_LIMITS_MESSAGES_PER_MINUTE": "1000",
    "SANDRA_LIMITS_MESSAGES_PER_SECOND": "100",
}

# (question, a word of the knowledge base's answer)
QUESTIONS = [
    ("What time is check-in?", "3 pm"),
    ("What is the wifi password?", "naranjas"),
    ("Is there parking?", "parking"),
    ("What time is check-out?", "11 am"),
    ("What is the address?", "Reina"),
    ("How far is the beach?", "beach"),
    ("Can I smoke?", "balcony"),
    ("Are pets allowed?", "dogs"),
    ("Where are the bins?", "bins"),
    ("What is the door code?", "4 7 1 9"),
]
# (first piece, second piece, a word only the second piece brings to the transcript)
HESITATIONS = [
    ("I would like to know the", "wifi password.", "password"),
    ("Can you tell me the", "address of the flat?", "address"),
    ("What time is", "check-out?", "out"),
    ("Where can I", "park the car?", "car"),
    ("I need to know the", "door code.", "code"),
    ("How far is it to the", "beach?", "beach"),
    ("Is there a", "washing machine?", "wash"),
    ("Can I bring my", "dog?", "dog"),
    ("Where do I put the", "rubbish?", "rubbish"),
    ("How do I get to the", "airport?", "airport"),
]
PAUSES_MS = [600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500]
BACKCHANNELS = ["Uh-huh.", "Yeah.", "Okay.", "Right.", "Mm-hmm.", "I see.", "Sure.", "Yes.", "Yeah, yeah.", "Okay, right."]
INTERRUPTIONS = [
    ("Wait, is there parking?", "parking"),
    ("Sorry, what is the wifi password?", "naranjas"),
    ("Wait, what time is check-out?", "11 am"),
    ("Hold on, how far is the beach?", "beach"),
    ("Wait, can I smoke?", "balcony"),
]
LONG_QUESTION = "Where is the nearest supermarket?"  # the knowledge base's longest English answer
BURSTS_MS = [150, 180, 220, 250, 280, 300, 320, 350, 380, 400]


_SPOKEN: dict[str, bytes] = {}


def voice(text: str) -> bytes:
    """``text`` spoken by Piper's joe at 48 kHz (what a browser sends)."""
    if text not in _SPOKEN:
        from .eot import piper_speech

        _SPOKEN[text] = resample(piper_speech(text), 16000, RATE)
    return _SPOKEN[text]


def synthetic_burst(ms: int) -> bytes:
    """The scripted voice, ``ms`` long: every frame voiced (a hum, a door)."""
    return resample(synthetic_voice("x" * max(1, ms // 55), TTS_RATE).tobytes(), TTS_RATE, RATE)


def cough(ms: int, seed: int) -> bytes:
    """Band-passed noise (300-3000 Hz) with a cough's envelope: a sharp attack, a decay."""
    rng = np.random.default_rng(seed)
    n = RATE * ms // 1000
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3000)] = 0
    noise = np.fft.irfft(spectrum, n)
    t = np.arange(n) / RATE
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / (ms / 1000 / 2.5))
    out = noise * envelope
    return (out / np.abs(out).max() * 0.6 * 32767).astype(np.int16).tobytes()


@dataclass
class Call:
    peer: ClientPeer

    async def settle(self) -> None:
        """Wait for Sandra listening, nothing playing, the microphone idle."""
        await self.peer.mic.idle.wait()
        await self.peer.wait_until(lambda: self._listening(), timeout=40, what="listening")
        await asyncio.sleep(0.4)

    def _listening(self) -> bool:
        states = [e for e in self.peer.events if e["type"] == "state"]
        return bool(states) and states[-1]["state"] == "listening"

    async def stop_reply(self, turn: int) -> None:
        """A client barge-in (hard stop) if turn ``turn``'s reply is still going."""
        if not any(e["type"] == "response:done" and e["turn_id"] == turn for e in self.peer.events):
            self.peer.send({"type": "barge-in"})
        await self.settle()


async def connect(url: str) -> Call:
    peer = ClientPeer(url, fast_receive=True)
    await peer.connect()
    peer.send({"type": "call:start", "language": "en"})
    call = Call(peer)
    await peer.wait_for("response:done", timeout=30)  # the greeting
    await call.settle()
    return call


def _reply_text(peer: ClientPeer, turn: int) -> str:
    return "".join(e["text"] for e in peer.events if e["type"] == "response:delta" and e["turn_id"] == turn)


async def _ask(call: Call, question: str, expected: str) -> dict[str, Any]:
    peer = call.peer
    mark = len(peer.events)
    sent_before = len(peer.mic.sent_voiced)
    peer.mic.play(voice(question) + silence(3000))
    transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=30)
    turn = transcript["turn_id"]
    await peer.wait_for("state", lambda e: e["state"] == "speaking" and e["turn_id"] == turn, after=mark, timeout=30)
    assert len(peer.mic.sent_voiced) > sent_before
    last_voiced = peer.mic.sent_voiced[-1]  # the question's (its trailing silence is not voiced)
    first = await peer.wait_until(lambda: peer.first_loud_after(last_voiced), timeout=20, what="reply audio")
    await peer.wait_until(lambda: expected in _reply_text(peer, turn) or any(
        e["type"] == "response:done" and e["turn_id"] == turn for e in peer.events[mark:]), timeout=30,
        what="the answer's text", audio=False)
    answered = expected in _reply_text(peer, turn)
    await call.stop_reply(turn)  # the turn's metrics come with the cut (or the end)
    metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == turn and "eos_ms" in e, after=mark, timeout=20)
    return {"question": question, "transcript": transcript["text"], "reply": _reply_text(peer, turn)[:80],
            "voice_to_voice_ms": round((first - last_voiced) * 1000, 1), "answered": answered,
            **{k: metrics.get(k) for k in ("eos_ms", "stt_ms", "eot_verdicts", "eot_probability", "preemptive")}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"client_ms": percentiles([r["voice_to_voice_ms"] for r in rows]),
            "eos_ms": percentiles([r["eos_ms"] for r in rows if r["eos_ms"] is not None]),
            "stt_ms": percentiles([r["stt_ms"] for r in rows if r["stt_ms"] is not None]),
            "answered": sum(r["answered"] for r in rows), "preemptive": sum(bool(r.get("preemptive")) for r in rows),
            "rows": rows}


async def voice_to_voice(urls: dict[str, str], questions: list[tuple[str, str]], warm_up: bool = True
                         ) -> dict[str, dict[str, Any]]:
    """Each question on each server in turn (``urls``: name -> URL), so that both meet the
    same machine load."""
    calls = {name: await connect(url) for name, url in urls.items()}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    try:
        if warm_up:
            for call in calls.values():
                await _warm_up(call)
        for question, expected in questions:
            for name, call in calls.items():
                rows[name].append(await _ask(call, question, expected))
    finally:
        for call in calls.values():
            await call.peer.close()
    return {name: _summary(r) for name, r in rows.items()}


async def _warm_up(call: Call) -> None:
    """One spoken turn, not measured: local Whisper's first transcription is slow (cold)."""
    peer = call.peer
    mark = len(peer.events)
    peer.mic.play(voice("Hello, I have a question.") + silence(2500))
    transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=40)
    await peer.wait_for("state", lambda e: e["state"] in ("speaking", "listening") and e["turn_id"] >= transcript[
        "turn_id"], after=mark, timeout=30)
    await call.stop_reply(transcript["turn_id"])


async def hesitations(url: str, cases: list[tuple[str, str, str, int]]) -> dict[str, Any]:
    call = await connect(url)
    peer = call.peer
    rows = []
    try:
        for first, second, tail, pause in cases:
            mark = len(peer.events)
            peer.mic.play(voice(first) + silence(pause) + voice(second) + silence(2500))
            await peer.mic.idle.wait()
            await peer.wait_for("response:delta", after=mark, timeout=30)
            await asyncio.sleep(1.0)  # a second turn's transcript, if it was cut
            finals = [e for e in peer.events[mark:] if e["type"] == "transcript" and e["final"]]
            answered = sorted({e["turn_id"] for e in peer.events[mark:] if e["type"] == "response:delta"})
            one = len(finals) == 1 and len(answered) <= 1  # not cut in two (Whisper may still mishear the tail)
            await call.stop_reply(max(answered) if answered else -1)
            await asyncio.sleep(0.3)
            metrics = [e for e in peer.events[mark:] if e["type"] == "metrics" and "eos_ms" in e]
            rows.append({"said": f"{first} [{pause} ms] {second}", "pause_ms": pause,
                         "transcripts": [e["text"] for e in finals], "answered_turns": len(answered), "one_turn": one,
                         "tail_heard": one and tail in finals[0]["text"].lower(),
                         "eot_verdicts": [m.get("eot_verdicts") for m in metrics],
                         "stt_ms": [m.get("stt_ms") for m in metrics]})
    finally:
        await peer.close()
    return {"one_turn": sum(r["one_turn"] for r in rows), "tail_heard": sum(r["tail_heard"] for r in rows),
            "cut": sum(not r["one_turn"] for r in rows), "rows": rows}


async def _speaking(peer: ClientPeer) -> int:
    mark = len(peer.events)
    peer.send({"type": "message", "text": LONG_QUESTION})
    ack = await peer.wait_for("message:ack", after=mark, timeout=10)
    speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking" and e["turn_id"] == ack["turn_id"],
                                   after=mark, timeout=30)
    await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 40, timeout=20, what="reply audio")
    return ack["turn_id"]


async def over_sandra(url: str, trials: list[tuple[str, str, bytes, str | None]]) -> dict[str, Any]:
    """``trials``: (kind, label, audio, expected answer word for an interruption or None)."""
    call = await connect(url)
    peer = call.peer
    rows = []
    try:
        for kind, label, audio, expected in trials:
            turn = await _speaking(peer)
            mark = len(peer.events)
            sent_before = len(peer.mic.sent_voiced)
            peer.mic.play(audio + silence(1500 if expected else 600))
            await peer.wait_until(lambda: len(peer.mic.sent_voiced) > sent_before, what="sound sent")
            started = peer.mic.sent_voiced[sent_before]
            row: dict[str, Any] = {"kind": kind, "said": label, "tentative": False, "resumed": False,
                                   "confirmed": False, "answered": False, "pause_ms": None}
            try:
                barge = await peer.wait_for("barge-in", lambda e: e["turn_id"] == turn, after=mark, timeout=3)
                row["tentative"] = True
                row["event_ms"] = round((barge["_at"] - started) * 1000, 1)
                quiet = await peer.wait_until(lambda: peer.quiet_since(started, run=5), timeout=5, what="silence")
                row["pause_ms"] = round((quiet - started) * 1000, 1)
            except AssertionError:
                pass  # never paused: she talked on (not detected as voice)
            if row["tentative"]:
                def outcome() -> dict[str, Any] | None:
                    return next((e for e in peer.events[mark:] if e["type"] == "resume"
                                 or (e["type"] == "barge-in" and e["tentative"] is False)), None)

                event = await peer.wait_until(outcome, timeout=15, what="resume or confirmation", audio=False)
                if event["type"] == "resume":
                    row["resumed"] = bool(await _heard_again(peer, event["_at"]))
                    if expected is not None:  # the rest of the words may still confirm it
                        row["resumed_first"] = True
                        row["resumed"] = False
                        try:
                            await peer.wait_for("barge-in", lambda e: e["tentative"] is False, after=mark, timeout=8)
                            row["confirmed"] = True
                        except AssertionError:
                            row["resumed"] = True
                else:
                    row["confirmed"] = True
            if expected is not None and row["confirmed"]:
                try:
                    answer = await peer.wait_for("response:delta", lambda e: e["turn_id"] > turn, after=mark,
                                                 timeout=30)
                    await asyncio.sleep(0.3)
                    row["answer"] = _reply_text(peer, answer["turn_id"])
                    row["answered"] = expected in row["answer"]
                    turn = answer["turn_id"]
                except AssertionError:
                    pass
            transcripts = [e["text"] for e in peer.events[mark:] if e["type"] == "transcript" and e["final"]]
            row["transcripts"] = transcripts
            rows.append(row)
            await call.stop_reply(turn)
    finally:
        await peer.close()
    return {"rows": rows}


async def _heard_again(peer: ClientPeer, at: float) -> bool:
    try:
        await peer.wait_until(lambda: peer.loud_frames(since=at) > 10, timeout=3, what="her voice again")
        return True
    except AssertionError:
        return False


def _counts(rows: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [r for r in rows if r["kind"] == kind]
    return {"n": len(mine), "paused": sum(r["tentative"] for r in mine), "resumed": sum(r["resumed"] for r in mine),
            "confirmed": sum(r["confirmed"] for r in mine), "answered": sum(r["answered"] for r in mine),
            "resumed_first": sum(r.get("resumed_first", False) for r in mine)}


async def run(repeat: int, compare: bool) -> dict[str, Any]:
    """``compare``: also the old silence rule; off (``--quick``), no warm-up turn either."""
    questions = QUESTIONS[:repeat]
    cases = [(*HESITATIONS[i], PAUSES_MS[i * len(PAUSES_MS) // max(1, repeat)]) for i in range(repeat)]
    noise = [("noise", f"hum {ms} ms", synthetic_burst(ms), None) if i % 2 == 0
             else ("noise", f"cough {ms} ms", cough(ms, i), None) for i, ms in enumerate(BURSTS_MS[:repeat])]
    if repeat < len(BURSTS_MS):
        noise = noise[:repeat]
    backchannels = [("backchannel", b, voice(b), None) for b in BACKCHANNELS[:repeat]]
    interruptions = [("interruption", t, voice(t), w) for t, w in (INTERRUPTIONS * 2)[:repeat]]
    out: dict[str, Any] = {"voice": "piper joe (en_US medium), noise sampled", "load_note":
                           "2 shared cores, other agents' jobs running: numbers are upper bounds"}
    with contextlib.ExitStack() as servers:
        smart = servers.enter_context(server_process(OFFLINE_ENV))
        urls = {"smart": smart.url}
        if compare:
            urls["silence"] = servers.enter_context(server_process({**OFFLINE_ENV, "SANDRA_TURN_DETECTOR": "silence"})).url
        for name, result in (await voice_to_voice(urls, questions, warm_up=compare)).items():
            out[f"voice_to_voice_{name}"] = result
        out["hesitations"] = await hesitations(smart.url, cases)
        over = await over_sandra(smart.url, [*noise, *backchannels, *interruptions])
    out["over_sandra"] = {k: _counts(over["rows"], k) for k in ("noise", "backchannel", "interruption")}
    out["over_sandra"]["rows"] = over["rows"]
    out["barge_in_pause_ms"] = percentiles([r["pause_ms"] for r in over["rows"] if r["pause_ms"] is not None])
    return out


def report(out: dict[str, Any]) -> str:
    smart = out["voice_to_voice_smart"]
    rows = [{"measure": "voice-to-voice, smart (client)", **smart["client_ms"],
             "count": f"{smart['answered']} answered, {smart.get('preemptive', 0)} preemptive"},
            {"measure": "  server eos_ms, smart", **smart["eos_ms"]},
            {"measure": "  server stt_ms, smart", **smart["stt_ms"]}]
    if "voice_to_voice_silence" in out:
        old = out["voice_to_voice_silence"]
        rows += [{"measure": "voice-to-voice, silence 500 ms", **old["client_ms"],
                  "count": f"{old['answered']} answered"},
                 {"measure": "  server eos_ms, silence", **old["eos_ms"]},
                 {"measure": "  server stt_ms, silence", **old["stt_ms"]}]
    h = out["hesitations"]
    rows.append({"measure": "hesitation 600-1500 ms", "n": h["one_turn"] + h["cut"],
                 "count": f"{h['one_turn']} one turn ({h.get('tail_heard', 0)} tail heard), {h['cut']} cut"})
    for kind in ("noise", "backchannel"):
        c = out["over_sandra"][kind]
        rows.append({"measure": f"{kind} over Sandra", "n": c["n"],
                     "count": f"{c['paused']} paused, {c['resumed']} resumed, {c['confirmed']} confirmed"})
    c = out["over_sandra"]["interruption"]
    rows.append({"measure": "interruption over Sandra", "n": c["n"],
                 "count": f"{c['confirmed']} confirmed, {c['answered']} answered, {c['resumed_first']} resumed first"})
    rows.append({"measure": "barge-in pause (client)", **out["barge_in_pause_ms"]})
    return table(rows, ["measure", "n", "p50", "p95", "max", "count"]) + f"\n(milliseconds; {out['load_note']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one of each, no silence comparison, no warm-up")
    parser.add_argument("--repeat", type=int, default=10, help="trials of each kind")
    args = parser.parse_args()
    started = time.monotonic()
    out = asyncio.run(run(1 if args.quick else args.repeat, compare=not args.quick))
    out["wall_s"] = round(time.monotonic() - started, 1)
    path = save("turns", out)
    print(report(out))
    for name in ("voice_to_voice_smart", "voice_to_voice_silence"):
        for r in out.get(name, {}).get("rows", []):
            print(f"  {name[15:]:8} {r['voice_to_voice_ms']:7.1f} ms  eos {r['eos_ms']}  stt {r['stt_ms']}  "
                  f"{r['eot_verdicts']}  "
                  f"{r['question']!r} -> {r['transcript']!r}")
    for r in out["hesitations"]["rows"]:
        print(f"  {'one' if r['one_turn'] else 'CUT'}  {r['said']!r} -> {r['transcripts']} {r['eot_verdicts']} "
              f"stt {r['stt_ms']}")
    for r in out["over_sandra"]["rows"]:
        print(f"  {r['kind']:12} {r['said']!r}: paused={r['tentative']} resumed={r['resumed']} "
              f"confirmed={r['confirmed']} answered={r['answered']} resumed_first={r.get('resumed_first', False)} "
              f"event_ms={r.get('event_ms')} pause_ms={r['pause_ms']} {r['transcripts']}")
    print(f"wrote {path} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
