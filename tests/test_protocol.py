"""protocol.py turns text into validated frames without any I/O."""

from __future__ import annotations

import json

import pytest

from chatserver import protocol


def test_visitor_message_parses() -> None:
    """A well-formed visitor message becomes a Message frame with its fields."""
    frame = protocol.parse('{"type":"message","body":"hi","client_msg_id":"a1"}', "visitor")
    assert frame == protocol.Message(body="hi", client_msg_id="a1")


def test_agent_frames_need_a_conversation_id() -> None:
    """Agent frames name their conversation; without it they are refused."""
    assert protocol.parse('{"type":"claim","conversation_id":"cv_1"}', "agent") == protocol.Claim(
        "cv_1")
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse('{"type":"typing","state":true}', "agent")
    assert err.value.code == "invalid_field"


def test_visitor_may_not_claim() -> None:
    """claim is an agent frame only."""
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse('{"type":"claim","conversation_id":"x"}', "visitor")
    assert err.value.code == "unknown_type"


@pytest.mark.parametrize("after", [True, 1.5, -1, None, "2"])
def test_resume_takes_a_whole_number(after: object) -> None:
    """after_seq must be an int >= 0 (not a bool, float, string or null)."""
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(json.dumps({"type": "resume", "after_seq": after}), "visitor")


def test_body_limit_is_4000_characters() -> None:
    """4000 characters pass, 4001 do not; the limit counts characters, not bytes."""
    ok = protocol.parse(json.dumps({"type": "message", "body": "é" * 4000, "client_msg_id": "x"}),
                        "visitor")
    assert isinstance(ok, protocol.Message)
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse(json.dumps({"type": "message", "body": "é" * 4001, "client_msg_id": "x"}),
                       "visitor")
    assert err.value.code == "body_too_long"


def test_oversized_and_binary_frames_are_refused() -> None:
    """Frames over 64 KiB and binary frames are errors, not crashes."""
    with pytest.raises(protocol.ProtocolError) as big:
        protocol.parse('{"type":"ping","x":"' + "a" * 70000 + '"}', "visitor")
    assert big.value.code == "too_large"
    with pytest.raises(protocol.ProtocolError) as binary:
        protocol.parse(b"\x00", "visitor")
    assert binary.value.code == "binary_not_supported"


def test_deeply_nested_json_is_an_error() -> None:
    """Pathological nesting is reported as invalid JSON instead of overflowing the stack."""
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse("[" * 100000 + "]" * 100000, "visitor")
    assert err.value.code in {"invalid_json", "too_large"}


def test_dump_is_compact_and_keeps_unicode() -> None:
    """Server frames are compact JSON with unicode kept as is."""
    assert protocol.dump({"type": "ack", "body": "ü"}) == '{"type":"ack","body":"ü"}'


def test_error_frame_shape() -> None:
    """Errors carry type, code and message."""
    err = protocol.ProtocolError("invalid_json", "bad")
    assert err.frame() == {"type": "error", "code": "invalid_json", "message": "bad"}


def test_read_frames_parse_for_both_audiences() -> None:
    """read takes a seq; agents also name the conversation."""
    assert protocol.parse('{"type":"read","seq":4}', "visitor") == protocol.Read(4)
    assert protocol.parse('{"type":"read","conversation_id":"cv_1","seq":0}', "agent") == (
        protocol.Read(0, "cv_1"))
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse('{"type":"read","seq":2}', "agent")
    assert err.value.code == "invalid_field"


@pytest.mark.parametrize("seq", [True, 1.5, -1, None, "2", 2**63])
def test_read_takes_a_whole_number(seq: object) -> None:
    """seq must be an int from 0 to the database's largest (not a bool, float or string)."""
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse(json.dumps({"type": "read", "seq": seq}), "visitor")
    assert err.value.code == "invalid_field"


def test_read_takes_no_other_field() -> None:
    """A visitor's read frame naming a conversation is refused: visitors have only their own."""
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse('{"type":"read","seq":1,"conversation_id":"cv_x"}', "visitor")
    assert err.value.code == "unknown_field"


def test_transfer_names_a_staff_member_or_the_queue() -> None:
    """transfer takes `to` as a sign-in name or null (the queue); visitors cannot send it."""
    frame = protocol.parse('{"type":"transfer","conversation_id":"cv_1","to":" bob "}', "agent")
    assert frame == protocol.Transfer(conversation_id="cv_1", to="bob")
    frame = protocol.parse('{"type":"transfer","conversation_id":"cv_1","to":null}', "agent")
    assert frame == protocol.Transfer(conversation_id="cv_1", to=None)
    for bad in ('{"type":"transfer","conversation_id":"cv_1"}',
                '{"type":"transfer","conversation_id":"cv_1","to":""}',
                '{"type":"transfer","conversation_id":"cv_1","to":7}',
                '{"type":"transfer","conversation_id":"cv_1","to":"' + "x" * 101 + '"}'):
        with pytest.raises(protocol.ProtocolError) as err:
            protocol.parse(bad, "agent")
        assert err.value.code == "invalid_field"
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse('{"type":"transfer","conversation_id":"cv_1","to":null}', "visitor")
    assert err.value.code == "unknown_type"


def test_dump_writes_the_standard_librarys_text_with_or_without_orjson() -> None:
    """The optional fast encoder (the `fast` extra) writes exactly what json.dumps would, and
    hands what it cannot write the same way (a lone surrogate, a huge integer) to json."""
    frames: list[dict[str, object]] = [
        {"type": "message", "conversation_id": "cv_1", "seq": 7, "sender": "visitor",
         "author": "Zoë \"Z\" O'Brien", "body": "héllo\n\t\\ \u2028 \x00 \x7f 😀 </script>",
         "sent_at": "2026-01-01T00:00:00Z", "client_msg_id": None},
        {"type": "status", "ok": True, "off": False, "n": -3, "nested": [{"a": []}, {}]},
        {"type": "x", "body": "\ud800 alone"},
        {"type": "x", "seq": 2**70},
    ]
    for frame in frames:
        assert protocol.dump(frame) == json.dumps(frame, ensure_ascii=False,
                                                  separators=(",", ":"))


def test_message_head_reads_conversation_seq_and_sender_off_the_front_of_a_frame() -> None:
    """The shortcut finds what parsing the whole frame finds, for frames dump wrote (a body
    that looks like the fields changes nothing) and, by parsing, for any other key order."""
    from chatserver.follow import reference

    written = protocol.dump({"type": "message", "conversation_id": "cv_a", "seq": 41,
                             "sender": "agent", "author": "A",
                             "body": '"seq":99,"conversation_id":"cv_b","sender":"visitor"'})
    assert protocol.message_head(written) == ("cv_a", 41, "agent")
    assert protocol.message_head(reference("cv_c", 5)) == ("cv_c", 5, None)
    other = json.dumps({"seq": 3, "type": "message", "conversation_id": "cv_d",
                        "sender": "visitor"})
    assert protocol.message_head(other) == ("cv_d", 3, "visitor")
