"""The datachannel codec: every message type, and no input that escapes ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import events, protocol
from server.errors import ProtocolError


def test_client_messages_parse():
    assert protocol.parse('{"type":"auth","token":"t","id":"x"}') == protocol.Auth(token="t", id="x")
    assert protocol.parse('{"type":"call:start","language":"ES"}') == protocol.CallStart(language="es")
    assert protocol.parse('{"type":"call:start"}') == protocol.CallStart()
    assert protocol.parse('{"type":"message","text":"  hola  "}') == protocol.Message(text="hola")
    assert protocol.parse('{"type":"barge-in"}') == protocol.BargeIn()
    assert protocol.parse(b'{"type":"call:end","id":3}') == protocol.CallEnd(id=3)
    assert protocol.parse('{"type":"ping","t":12.5}') == protocol.Ping(t=12.5)


@pytest.mark.parametrize(
    "raw, code, words",
    [
        ("{", "bad_json", "not valid JSON"),
        ("3", "bad_json", "JSON object"),
        ('{"text":"x"}', "bad_type", "string 'type'"),
        ('{"type":"nope"}', "unknown_type", "unknown message type 'nope'"),
        ('{"type":"ping","t":true}', "bad_field", "'ping'.t must be a number"),
        ('{"type":"ping","id":[1]}', "bad_field", "'ping'.id must be a string or an integer"),
        ('{"type":"message"}', "bad_field", "needs a 'text'"),
        ('{"type":"call:start","language":"fr"}', "bad_field", "language must be one of en, es"),
        (b"\xff", "bad_json", "UTF-8"),
        ('{"type":"message","text":"' + "a" * 1001 + '"}', "too_large", "over 1000 characters"),
        ("x" * 5000, "too_large", "4096-byte limit"),
        ("[" * 3000 + "]" * 3000, "too_large", "limit"),
    ],
)
def test_bad_messages(raw, code, words):
    with pytest.raises(ProtocolError, match=words) as info:
        protocol.parse(raw)
    assert info.value.code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.dictionaries(
            st.sampled_from(["type", "text", "t", "id", "token", "language"]),
            json_values | st.sampled_from(["auth", "call:start", "message", "barge-in", "call:end", "ping"]),
        ).map(json.dumps),
    )
)
def test_any_input_parses_or_raises_protocol_error(data):
    try:
        message = protocol.parse(data)
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_type", "unknown_type", "bad_field", "too_large"}
        assert str(exc)
    else:
        assert message.type in {"auth", "call:start", "message", "barge-in", "call:end", "ping"}


def test_events_encode_compactly_and_drop_none():
    assert events.Pong(None, 1.0).to_json() == '{"type":"pong","server_time":1.0}'
    assert events.TranscriptEvent(3, "¿Qué?", True).to_json() == '{"type":"transcript","turn_id":3,"text":"¿Qué?","final":true}'
    assert events.MessageAck(4, id="m1").to_dict() == {"type": "message:ack", "turn_id": 4, "id": "m1"}
    metrics = events.TurnMetrics(2, kind="voice", interrupted=False, extra={"eos_ms": 500.0})
    assert metrics.to_dict() == {"type": "metrics", "turn_id": 2, "kind": "voice", "interrupted": False, "eos_ms": 500.0}
    assert events.TurnMetrics(2, extra={"barge_in_ms": 80.0}).to_dict() == {"type": "metrics", "turn_id": 2, "barge_in_ms": 80.0}


def test_call_start_language_auto_means_detect():
    assert protocol.parse('{"type":"call:start","language":"auto"}').language is None
    assert protocol.parse('{"type":"call:start","language":"es-ES"}').language == "es"


def test_errors_carry_the_id_when_it_can_be_read():
    with pytest.raises(ProtocolError) as info:
        protocol.parse('{"type":"call:start","language":"fr","id":"r1"}')
    assert info.value.message_id == "r1"
    with pytest.raises(ProtocolError) as info:
        protocol.parse('{"type":"teleport","id":9}')
    assert info.value.message_id == 9
    with pytest.raises(ProtocolError) as info:
        protocol.parse('{"type":"teleport","id":true}')
    assert info.value.message_id is None
