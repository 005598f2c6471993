"""The turn-taking core, synchronously: inputs in, the whole list of actions out."""

from __future__ import annotations

from server.conversation import actions as a
from server.conversation.actions import ReplyTimings
from server.conversation.turns import State, TurnPolicy, TurnTaking
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
            detail = " ".join(str(fields[k]) for k in ("turn_id", "speaking", "code", "source", "tentative", "interrupted", "text")
                              if k in fields)
            return f"{ev.type} {detail}".strip()
        case a.StartTranscription():
            return f"stt {action.turn_id} ({len(action.audio)} chunks, {action.language})"
        case a.FinishTranscription():
            return f"stt finish {action.turn_id}"
        case a.CancelTranscription():
            return f"stt cancel {action.turn_id}"
        case a.StartReply():
            return f"reply {action.turn_id} {action.script or 'llm'}" + (" held" if action.held else "")
        case a.ReleaseReply():
            return f"reply release {action.turn_id}"
        case a.DropReply():
            return f"reply drop {action.turn_id}"
        case a.CancelReply():
            return f"reply cancel {action.turn_id}"
        case a.FlushAudio():
            return "flush"
        case a.PauseAudio():
            return "pause"
        case a.ResumeAudio():
            return f"resume {action.turn_id}"
        case a.JudgeAudio():
            return f"judge {action.turn_id} seq {action.seq}"
    raise AssertionError(action)


HARD = TurnPolicy(detector="silence", confirm_ms=0)  # every barge-in confirmed at once


class Harness:
    def __init__(self, end_silence_ms: int = 100, **kwargs: object) -> None:
        kwargs.setdefault("policy", HARD)
        self.end_frames = end_silence_ms // 20
        segmenter = SpeechSegmenter(start_ms=40, end_silence_ms=end_silence_ms, pre_roll_ms=0, barge_in_ms=80)
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
        self.audio("xxxxx" + "." * self.end_frames)
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
        "flush", "reply cancel 2", "barge-in 2 voice False", "state user_speaking 3", "stt 3 (3 chunks, en)",
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
    assert h.audio("xxxx") == ["vad True", "flush", "stt cancel 2", "barge-in 2 voice False", "state user_speaking 3",
                               "stt 3 (12 chunks, en)"]  # turn 2's 9 chunks + the new 3
    h.core.transcribed(2, Transcript("stale", 0.0), 5.0, h.t)  # the cancelled one, late: ignored
    assert h.take() == []


def test_a_typed_message_over_a_reply_cuts_it_and_is_acknowledged_first():
    h = Harness()
    h.greeted()
    h.answering()
    h.core.typed("Where can I park?", h.t, "m1")
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 client False", "state listening 2", "message:ack 3",
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
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 client False", "state listening 2", "barge-in:ack 2 True"]
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


# --- smart end of turn ------------------------------------------------------------------------

SMART = TurnPolicy(detector="smart", min_silence_ms=200, max_silence_ms=2000, rejudge_ms=400)  # re-judging on


def smart() -> Harness:
    def judge(probability: float | None, text: str, language: str) -> bool:
        return (probability or 0.0) > 0.5 and not text.rstrip(".?!").endswith((" the", " el"))

    h = Harness(end_silence_ms=2000, policy=SMART, judge=judge)
    h.greeted()
    return h


def test_a_finished_utterance_ends_the_turn_at_min_silence_with_the_speculative_transcript():
    h = smart()
    h.audio("xxxxx")
    assert h.audio("." * 9) == []
    assert h.audio(".") == ["stt finish 2", "judge 2 seq 0"]  # 200 ms of silence: transcribe and judge
    h.core.turn_judged(2, 0, 0.9, h.t)
    assert h.take() == []  # both verdicts first
    h.core.transcribed(2, Transcript("What time is check-in?", 0.0), 90.0, h.t)
    assert h.take() == ["vad False", "state thinking 2", "transcript 2 What time is check-in?", "reply 2 llm"]
    h.played(2)
    h.core.reply_finished(2, "From three.", T, h.t)
    metrics = [x.event for x in h.actions() if isinstance(x, a.Send) and isinstance(x.event, TurnMetrics)][0]
    assert metrics.extra["eot_verdicts"] == ["complete"] and metrics.extra["eot_probability"] == 0.9
    assert h.audio("." * 100) == []  # the segmenter was cut: no second end of speech


def test_an_unfinished_utterance_waits_is_judged_again_and_ends_at_max_silence():
    h = smart()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("I would like to know the", 0.0), 90.0, h.t)
    h.core.turn_judged(2, 0, 0.8, h.t)
    assert h.take() == []  # ends in "the": not finished, keep listening
    assert h.audio("." * 19) == []
    assert h.audio(".") == ["judge 2 seq 0"]  # 400 ms later: judged again, the words are the same
    h.core.turn_judged(2, 0, 0.3, h.t)
    assert h.take() == []
    assert h.audio("." * 69) == ["judge 2 seq 0"]  # at 1000 ms (no verdict for it comes back)
    assert h.audio(".") == ["vad False", "state thinking 2", "transcript 2 I would like to know the", "reply 2 llm"]


def test_the_speculation_is_thrown_away_when_the_caller_goes_on():
    h = smart()
    h.audio("xxxxx" + "." * 10)  # speculation started
    assert h.audio("xx") == ["stt cancel 2", "stt 2 (15 chunks, en)"]  # all of it, again
    h.core.transcribed(2, Transcript("I would like to know the", 0.0), 90.0, h.t)  # the stale one
    h.core.turn_judged(2, 0, 0.9, h.t)
    assert h.take() == []
    h.audio("xxxx" + "." * 10)
    assert h.core.take() == []
    h.core.transcribed(2, Transcript("I would like to know the wifi password.", 0.0), 90.0, h.t, seq=1)
    h.core.turn_judged(2, 1, 0.95, h.t)
    assert h.take()[-2:] == ["transcript 2 I would like to know the wifi password.", "reply 2 llm"]


def test_noise_judged_with_no_words_ends_the_turn_unanswered():
    h = smart()
    h.audio("xxxx" + "." * 10)
    h.core.turn_judged(2, 0, 0.2, h.t)
    h.core.transcribed(2, Transcript("", 0.9), 50.0, h.t)
    assert h.take() == ["vad False", "state thinking 2", "state listening 2"]


# --- preemptive generation ----------------------------------------------------------------------

PREEMPT = TurnPolicy(detector="smart", min_silence_ms=200, max_silence_ms=2000, preemptive=True)


def preempting() -> Harness:
    def judge(probability: float | None, text: str, language: str) -> bool:
        return (probability or 0.0) > 0.5 and not text.rstrip(".?!").endswith(" the")

    h = Harness(end_silence_ms=2000, policy=PREEMPT, judge=judge)
    h.greeted()
    return h


def test_a_reply_prepared_on_the_speculative_transcript_is_released_when_the_turn_ends_with_it():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    start = h.actions()
    assert [show(x) for x in start] == ["reply 2 llm held"]  # before any verdict: nothing is said yet
    assert start[0].history[-1] == ChatMessage("user", "Is there parking?")  # type: ignore[union-attr]
    assert h.core.history[-1].role == "assistant"  # nothing remembered before the turn is over
    h.core.turn_judged(2, 0, 0.3, h.t)  # the audio sounds unfinished: keep listening
    assert h.take() == []
    assert h.audio("." * 89) == []
    assert h.audio(".") == ["vad False", "state thinking 2", "transcript 2 Is there parking?", "reply release 2"]
    assert h.core.history[-1] == ChatMessage("user", "Is there parking?")
    h.played(2)
    h.core.reply_finished(2, "No, but the street is free.", T, h.t)
    metrics = [x.event for x in h.actions() if isinstance(x, a.Send) and isinstance(x.event, TurnMetrics)][0]
    assert metrics.extra["preemptive"] is True and metrics.extra["eot_verdicts"] == ["incomplete", "max_silence"]


def test_a_finished_verdict_after_the_transcript_releases_the_held_reply():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    h.core.turn_judged(2, 0, 0.9, h.t)
    assert h.take() == ["reply 2 llm held", "vad False", "state thinking 2", "transcript 2 Is there parking?",
                        "reply release 2"]


def test_no_reply_is_prepared_when_both_verdicts_are_in_together():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.turn_judged(2, 0, 0.9, h.t)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    assert h.take() == ["vad False", "state thinking 2", "transcript 2 Is there parking?", "reply 2 llm"]


def test_the_held_reply_is_dropped_unheard_when_the_caller_goes_on():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("I would like to know the", 0.0), 90.0, h.t)
    h.core.turn_judged(2, 0, 0.9, h.t)
    assert h.take() == ["reply 2 llm held"]  # "the": unfinished, but the reply is prepared anyway
    assert h.audio("xx") == ["reply drop 2", "stt cancel 2", "stt 2 (15 chunks, en)"]
    h.audio("xxx" + "." * 10)
    h.core.transcribed(2, Transcript("I would like to know the wifi password.", 0.0), 90.0, h.t, seq=1)
    assert h.take() == ["reply 2 llm held"]  # prepared again, on the whole utterance
    h.core.turn_judged(2, 1, 0.95, h.t)
    assert h.take()[-2:] == ["transcript 2 I would like to know the wifi password.", "reply release 2"]


def test_a_held_reply_that_fails_is_dropped_and_the_turn_answered_afresh():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    h.core.turn_judged(2, 0, 0.3, h.t)
    h.take()
    h.core.reply_failed(2, "provider_error", "the anthropic service failed", h.t)
    assert h.take() == ["reply drop 2"]  # no error, no apology: nobody heard it
    assert h.audio("." * 90) == ["vad False", "state thinking 2", "transcript 2 Is there parking?", "reply 2 llm"]


def test_a_message_typed_or_a_hang_up_drops_the_held_reply():
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    h.take()
    h.core.typed("What is the wifi password?", h.t)
    assert h.take()[:2] == ["stt cancel 2", "reply drop 2"]
    h.core.reply_finished(2, "stale", T, h.t)  # a held reply never finishes on its own
    assert h.take() == []
    h = preempting()
    h.audio("xxxxx" + "." * 10)
    h.core.transcribed(2, Transcript("Is there parking?", 0.0), 90.0, h.t)
    h.take()
    h.core.end(h.t)
    assert "reply drop 2" in h.take()


def test_no_reply_is_prepared_while_another_one_is_unwinding():
    h = preempting()
    turn = h.answering("Tell me about the beach.")
    h.audio("xxxxx")  # over Sandra: cut (confirm at once), the next turn
    h.take()
    h.audio("." * 10)
    h.core.transcribed(turn + 1, Transcript("Is there parking?", 0.0), 90.0, h.t)
    assert "reply 3 llm held" not in h.take()  # the cut reply is not gone yet
    h.core.reply_cancelled(turn, "The beach", T, h.t)
    h.take()
    h.core.turn_judged(turn + 1, 0, 0.9, h.t)
    assert h.take()[-1] == "reply 3 llm"


# --- barge-in in two steps ---------------------------------------------------------------------

TWO_STEP = TurnPolicy(detector="silence", confirm_ms=1200, resume_ms=400, sound_end_ms=100)


def two_step() -> tuple[Harness, int]:
    words = {"en": {"uh-huh", "yeah", "ok"}, "es": {"vale", "sí"}}
    h = Harness(policy=TWO_STEP, is_backchannel=lambda text, lang: text.lower().strip(".!") in words[lang])
    h.greeted()
    return h, h.answering()


def test_voice_over_sandra_pauses_her_and_a_cough_resumes_her():
    h, turn = two_step()
    assert h.audio("xxxx") == ["vad True", "pause", "barge-in 2 voice True", "stt 3 (3 chunks, en)"]
    assert h.played(None) == ["metrics 2 ['barge_in_ms']"]  # silent at once: the barge-in latency
    assert h.audio("xxx.....") == ["vad False", "stt finish 3"]  # 100 ms of silence ends the sound
    h.core.transcribed(3, Transcript("", 0.9), 50.0, h.t)  # a cough: no words
    assert h.take() == ["stt cancel 3", "resume 2"]
    assert h.core.state is State.SPEAKING and h.core.turn_id == 2
    h.core.reply_finished(turn, "From three in the afternoon.", T, h.t)
    assert h.take()[0] == "response:done 2 False From three in the afternoon."  # remembered whole
    assert h.core.history[-1] == ChatMessage("assistant", "From three in the afternoon.")


def test_a_backchannel_resumes_her_in_either_language():
    h, turn = two_step()
    h.audio("xxxxx.....")
    h.core.transcribed(3, Transcript("Uh-huh.", 0.1), 50.0, h.t)
    assert h.take()[-1] == "resume 2"
    h.core.language = "es"
    h.audio("xxxxx.....")
    h.core.transcribed(3, Transcript("Vale.", 0.1), 50.0, h.t)
    assert h.take()[-1] == "resume 2"


def test_real_words_confirm_the_interruption_and_are_answered():
    h, turn = two_step()
    h.audio("xxxxxxxx.....")
    h.core.transcribed(3, Transcript("Wait, is there parking?", 0.0), 80.0, h.t)
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 voice False", "state user_speaking 3",
                        "state thinking 3", "transcript 3 Wait, is there parking?"]
    h.core.reply_cancelled(2, "From", T, h.t)
    assert h.take()[-1] == "reply 3 llm"
    assert [m.text for m in h.core.history[-2:]] == ["From", "Wait, is there parking?"]


def test_a_long_interruption_is_confirmed_while_it_goes_on():
    h, turn = two_step()
    h.audio("xxxx")
    assert h.audio("x" * 55) == []
    assert h.audio("x") == ["flush", "reply cancel 2", "barge-in 2 voice False", "state user_speaking 3"]
    h.core.reply_cancelled(2, "From", T, h.t)
    assert h.audio("xxx......") == ["response:done 2 True From",
                                    "metrics 2 ['eos_ms', 'llm_ttft_ms', 'stt_ms', 'tts_ttfb_ms', 'voice_to_voice_ms']",
                                    "vad False", "stt finish 3", "state thinking 3"]


def test_no_words_in_time_resumes_her_and_late_real_words_still_cut_her():
    h, turn = two_step()
    h.audio("xxxxx.....")
    h.take()
    h.played(None, 19)
    assert h.take() == []
    assert h.played(None) == ["resume 2"]  # 400 ms after the end of the sound, still listening for words
    h.core.transcribed(3, Transcript("Wait!", 0.0), 500.0, h.t)  # the words came late: a real interruption
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 voice False", "state user_speaking 3",
                        "state thinking 3", "transcript 3 Wait!"]


def test_late_words_that_are_a_backchannel_change_nothing():
    h, turn = two_step()
    h.audio("xxxxx.....")
    h.played(None, 20)
    h.take()
    h.core.transcribed(3, Transcript("Yeah.", 0.0), 500.0, h.t)
    assert h.take() == []
    assert h.core.state is State.SPEAKING


def test_the_button_during_a_pause_is_a_hard_stop():
    h, turn = two_step()
    h.audio("xxxx")
    h.take()
    h.core.client_barge_in(h.t, "b")
    assert h.take() == ["stt cancel 3", "flush", "reply cancel 2", "barge-in 2 client False", "state listening 2",
                        "barge-in:ack 2 True"]


def test_a_confirmed_interruption_is_a_turn_that_may_go_on_after_a_pause():
    h = Harness(end_silence_ms=500, policy=TWO_STEP)
    h.greeted()
    h.answering()
    h.audio("xxxxxx.....")  # "Wait," ... 100 ms of silence: the sound ended
    h.core.transcribed(3, Transcript("Wait,", 0.0), 60.0, h.t)
    assert h.take() == ["flush", "reply cancel 2", "barge-in 2 voice False", "state user_speaking 3"]
    h.core.reply_cancelled(2, "From", T, h.t)
    h.take()
    assert h.audio("xx") == ["stt cancel 3", "stt 3 (11 chunks, en)"]  # "... is there parking?": all of it again
    assert h.audio("xxxx" + "." * 25) == ["vad False", "stt finish 3", "state thinking 3"]
    h.core.transcribed(3, Transcript("Wait, is there parking?", 0.0), 60.0, h.t, seq=1)
    assert h.take() == ["transcript 3 Wait, is there parking?", "reply 3 llm"]
