"""The turn-taking core, synchronously: inputs in, the whole list of actions out."""

from __future__ import annotations

from server.conversation import actions as a
from server.conversation.actions import ReplyTimings
from server.conversation.turns import State, TurnTaking
from server.events import Event, StateChanged, TurnMetrics
from server.media.echo import EchoGuard
from server.media.segmenter import SpeechSegmenter
from server.providers.base import ChatMessage, Transcript

FRAME = 0.02
VOICED = b"\x01\x00" * 320
QUIET = bytes(640)
T = ReplyTimings(llm_ttft_ms=5.0, tts_ttfb_ms=2.0)


def show(action: a.Action) -> str:
    """A compact line per action (audio feeding left out)."""
    match action:
        case a.Send(event=StateChanged() as ev):
            return f"state {ev.state} {ev.turn_id}"
        case a.Send(event=TurnMetrics() as ev):
            return f"metrics {ev.turn_id} {sorted(ev.extra)}"
        case a.Send(event=ev):
            fields = ev.to_dict()
            detail = " ".join(str(fields[k]) for k in ("turn_id", "speaking", "code", "source", "interrupted", "text")
                              if k in fields)
            return f"{ev.type} {detail}".strip()
        case a.StartTranscription():
            return f"stt {action.turn_id} ({len(action.audio)} chunks, {action.language})"
        case a.FinishTranscription():
            return f"stt finish {action.turn_id}"
        case a.CancelTranscription():
            return f"stt cancel {action.turn_id}"
        case a.StartReply():
            return f"reply {action.turn_id} {action.script or 'llm'}"
        case a.CancelReply():
            return f"reply cancel {action.turn_id}"
        case a.FlushAudio():
            return "flush"
    raise AssertionError(action)


class Harness:
    def __init__(self, **kwargs: object) -> None:
        segmenter = SpeechSegmenter(start_ms=40, end_silence_ms=100, pre_roll_ms=0, barge_in_ms=80)
        self.core = TurnTaking(segmenter, EchoGuard(), **kwargs)  # type: ignore[arg-type]
        self.t = 100.0

    def take(self) -> list[str]:
        return [show(x) for x in self.core.take() if not isinstance(x, a.FeedTranscription)]

    def actions(self) -> list[a.Action]:
        return self.core.take()

    def feed(self, pattern: str) -> None:
        """Caller frames: ``x`` voiced, ``.`` silence, 20 ms each."""
        for ch in pattern:
            voiced = ch == "x"
            self.core.frame(VOICED if voiced else QUIET, voiced, 3000.0 if voiced else 10.0, self.t)
            self.t += FRAME

    def audio(self, pattern: str) -> list[str]:
        self.feed(pattern)
        return self.take()

    def played(self, reply_id: int | None, frames: int = 1) -> list[str]:
        for _ in range(frames):
            self.core.outbound_frame(self.t, 0.0, reply_id)
            self.t += FRAME
        return self.take()

    def greeted(self) -> None:
        """call:start, the greeting spoken to its end: listening on turn 1."""
        self.core.call_start("en", self.t, 1)
        self.played(1, 3)
        self.core.reply_finished(1, "Hi!", T, self.t)
        self.take()

    def answering(self, text: str = "What time is check-in?") -> int:
        """A voice turn transcribed, its reply audible: returns its turn id."""
        self.audio("xxxxx.....")
        turn = self.core.turn_id
        self.core.transcribed(turn, Transcript(text, 0.0), 30.0, self.t)
        self.played(turn, 2)
        self.take()
        return turn


def test_call_start_greets_then_listens():
    h = Harness()
    h.core.call_start("es", h.t, 7)
    assert h.take() == ["state listening 0", "call:started", "state thinking 1", "reply 1 greeting"]
    assert h.played(None) == []
    assert h.played(1) == ["state speaking 1"]
    h.core.reply_finished(1, "¡Hola!", T, h.t)
    assert h.take() == ["response:done 1 False ¡Hola!", "metrics 1 ['llm_ttft_ms', 'tts_ttfb_ms']", "state listening 1"]
    assert h.core.language == "es" and h.core.history == [ChatMessage("assistant", "¡Hola!")]


def test_a_voice_turn_from_onset_to_reply():
    h = Harness()
    h.greeted()
    assert h.audio("xx") == ["vad True", "state user_speaking 2", "stt 2 (1 chunks, en)"]
    assert h.audio("xxx.") == []
    assert h.audio("....") == ["vad False", "stt finish 2", "state thinking 2"]  # 100 ms of silence
    h.core.transcribed(2, Transcript("What time is check-in?", 0.01), 42.0, h.t)
    assert h.take() == ["transcript 2 What time is check-in?", "reply 2 llm"]
    assert h.played(2) == ["state speaking 2"]
    h.core.reply_finished(2, "From three.", T, h.t)
    assert h.take() == [
        "response:done 2 False From three.",
        "metrics 2 ['eos_ms', 'llm_ttft_ms', 'stt_ms', 'tts_ttfb_ms', 'voice_to_voice_ms']",
        "state listening 2",
    ]
    assert [m.text for m in h.core.history] == ["Hi!", "What time is check-in?", "From three."]


def test_the_reply_is_asked_for_with_the_history_ending_in_the_callers_words():
    h = Harness()
    h.greeted()
    h.feed("xxxxx.....")
    h.core.transcribed(2, Transcript("Wifi?", 0.0), 10.0, h.t)
    (start,) = [x for x in h.actions() if isinstance(x, a.StartReply)]
    assert start.history[-1] == ChatMessage("user", "Wifi?") and start.caller_turn == 1 and start.language == "en"


def test_a_turn_with_no_words_is_not_answered():
    h = Harness()
    h.greeted()
    h.audio("xxxxx.....")
    h.core.transcribed(2, Transcript("  ", 0.0), 10.0, h.t)
    assert h.take() == ["state listening 2"]
    h.audio("xxxxx.....")
    h.core.transcribed(3, Transcript("Thank you.", 0.95), 10.0, h.t)  # Whisper: probably no speech
    assert h.take() == ["state listening 3"]
    assert [m.role for m in h.core.history] == ["assistant"]


def test_a_blip_over_sandra_is_held_and_dropped():
    h = Harness()
    h.greeted()
    h.answering()
    assert h.audio("xxx.....") == ["vad True", "vad False"]  # 60 ms voiced: not a barge-in
    assert h.core.state is State.SPEAKING


def test_sustained_speech_over_sandra_interrupts_her_and_is_the_next_turn():
    h = Harness()
    h.greeted()
    turn = h.answering()
    assert h.audio("xx") == ["vad True"]  # held
    assert h.audio("xx") == [  # 80 ms voiced: barge-in
        "flush", "reply cancel 2", "barge-in 2 voice", "state user_speaking 3", "stt 3 (3 chunks, en)",
    ]
    assert h.played(None) == ["metrics 2 ['barge_in_ms']"]  # the first silent frame after the flush
    h.core.reply_cancelled(turn, "From", T, h.t)  # the shell awaited the reply: what was heard
    assert h.take() == [
        "response:done 2 True From", "metrics 2 ['eos_ms', 'llm_ttft_ms', 'stt_ms', 'tts_ttfb_ms', 'voice_to_voice_ms']",
    ]
    assert h.core.history[-1] == ChatMessage("assistant", "From", interrupted=True)


def test_no_reply_starts_and_nothing_is_remembered_while_a_cut_reply_unwinds():
    h = Harness()
    h.greeted()
    h.answering()
    h.audio("xxxx.....")  # barge-in, then the interruption ends
    h.take()
    h.core.transcribed(3, Transcript("Is there parking?", 0.0), 5.0, h.t)  # before the old reply is gone
    assert h.take() == ["transcript 3 Is there parking?"]
    h.core.reply_cancelled(2, "From three", T, h.t)
    assert h.take()[-1] == "reply 3 llm"
    assert [(m.text, m.interrupted) for m in h.core.history[-2:]] == [("From three", True), ("Is there parking?", False)]


def test_speech_over_a_turn_not_yet_transcribed_is_one_utterance():
    h = Harness()
    h.greeted()
    h.audio("xxxxx.....")  # turn 2 ends, transcription running: thinking
    h.take()
    assert h.audio("xxxx") == ["vad True", "flush", "stt cancel 2", "barge-in 2 voice", "state user_speaking 3",
                               "stt 3 (12 chunks, en)"]  # turn 2's 9 chunks + the new 3
    h.core.transcribed(2, Transcript("stale", 0.0), 5.0, h.t)  # the cancelled one, late: ignored
    assert h.take() == []


def test_a_typed_message_over_a_reply_cuts_it_and_is_acknowledged_first():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.typed("Where can I park?", h.t, "m1")
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 client", "state listening 2", "message:ack 3",
                        "state thinking 3"]
    h.core.reply_cancelled(2, "From", T, h.t)
    assert h.take()[-1] == "reply 3 llm"
    assert [m.text for m in h.core.history[-2:]] == ["From", "Where can I park?"]  # the cut reply, then the message


def test_a_message_typed_while_the_caller_speaks_drops_their_turn():
    h = Harness()
    h.greeted()
    h.audio("xxx")
    h.take()
    h.core.typed("Wifi password?", h.t)
    assert h.take() == ["stt cancel 2", "message:ack 3", "state thinking 3", "reply 3 llm"]
    assert h.audio("..........") == ["vad False"]  # the dropped turn's end changes nothing


def test_client_barge_in_is_a_hard_stop_and_always_acknowledged():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.client_barge_in(h.t, "b1")
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 client", "state listening 2", "barge-in:ack 2 True"]
    h.core.client_barge_in(h.t, "b2")
    assert h.take() == ["barge-in:ack 2 False"]


def test_a_failed_reply_is_apologised_for_in_the_same_turn():
    h = Harness()
    h.greeted()
    turn = h.answering()
    h.core.reply_failed(turn, "internal_error", "RuntimeError", h.t)
    assert h.take() == ["error internal_error", "reply 2 apology"]
    h.core.reply_finished(turn, "From Sorry, a problem.", T, h.t)
    assert h.take()[0] == "response:done 2 False From Sorry, a problem." and h.take() == []
    assert h.core.state is State.LISTENING


def test_stt_failing_while_the_caller_speaks_ends_their_turn_with_an_apology():
    h = Harness()
    h.greeted()
    h.audio("xxx")
    h.take()
    h.core.transcription_failed(2, "provider_error", "socket dropped", h.t)
    assert h.take() == ["error provider_error", "state thinking 2", "reply 2 apology"]
    assert h.audio("xxxx......") == ["vad False"]  # the rest of their speech goes nowhere


def test_recovery_after_a_defect_drops_everything_and_apologises():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.recover(h.t)
    assert h.take() == ["error internal_error", "state thinking 3", "reply 3 apology"]
    h.core.reply_cancelled(2, "late", T, h.t)  # a report about a dropped turn changes nothing
    h.core.reply_finished(3, "Sorry.", T, h.t)
    assert h.take()[0] == "response:done 3 False Sorry."


def test_the_language_is_detected_from_the_first_words_when_not_given():
    h = Harness()
    h.core.call_start(None, h.t)
    h.played(1)
    h.core.reply_finished(1, "Hi!", T, h.t)
    h.take()
    h.feed("xxxxx.....")
    (stt,) = [x for x in h.actions() if isinstance(x, a.StartTranscription)]
    assert stt.language is None and stt.fallback_language == "en"
    h.core.transcribed(2, Transcript("¿Dónde aparco?", 0.0, language="es"), 10.0, h.t)
    (reply,) = [x for x in h.actions() if isinstance(x, a.StartReply)]
    assert reply.language == "es" and h.core.language == "es"
    h.feed("xxxxx.....")
    (stt,) = [x for x in h.actions() if isinstance(x, a.StartTranscription)]
    assert stt.language == "es"


def test_hang_up_cancels_what_is_under_way():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.end(h.t)
    assert h.take() == ["reply cancel 2", "state idle 2"]
    assert h.audio("xxxxx.....") == []


def test_caller_turns_count_voice_and_typed_turns_not_the_greeting():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.typed("Thanks", h.t)
    h.core.reply_cancelled(2, "", T, h.t)
    starts = [x.caller_turn for x in h.actions() if isinstance(x, a.StartReply)]
    assert starts == [2]


def test_events_are_typed():
    h = Harness()
    h.core.call_start("en", h.t, 1)
    sent = [x.event for x in h.actions() if isinstance(x, a.Send)]
    assert all(isinstance(e, Event) for e in sent)
    assert sent[1].to_dict() == {"type": "call:started", "language": "en", "id": 1}
