"""WebSocket frames: text in, validated frames out, and frames back to text. No I/O here.

`parse_visitor` and `parse_agent` turn one text frame into a typed frame or raise `ProtocolError`
naming what was wrong; `dump` serialises a server frame. See docs/protocol.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .storage.base import Note as NoteRecord
    from .storage.base import Rating as RatingRecord

MAX_FRAME_BYTES = 64 * 1024
MAX_BODY_CHARS = 4000
MAX_CLIENT_MSG_ID = 100
MAX_CONVERSATION_ID = 64
MAX_SEQ = 2**63 - 1  # what the database's integers hold
MAX_STAFF_NAME = 100  # as a sign-in name may be
MAX_RATING_COMMENT = 1000


class ProtocolError(ValueError):
    """A frame that cannot be accepted; `code` goes into the error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def frame(self) -> dict[str, str]:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Resume:
    after_seq: int
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    body: str
    client_msg_id: str
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    state: bool
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Close:
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the conversation to the staff member signed in as `to`, or back to the queue
    (None). Naming oneself takes over a conversation whose agent is away or gone."""

    conversation_id: str
    to: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Read:
    """Everything up to `seq` was seen by the sender."""

    seq: int
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """A staff-only note: stored apart from the messages and never sent to the visitor."""

    body: str
    client_msg_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Rating:
    """The visitor's 1-5 rating of their closed conversation, with an optional comment."""

    score: int
    comment: str


Frame = Resume | Message | Typing | Close | Claim | Ping | Read | Transfer | Note | Rating
Audience = Literal["visitor", "agent"]

# The fields each frame type takes, per audience; "type" is implied.
_FIELDS: dict[Audience, dict[str, set[str]]] = {
    "visitor": {
        "resume": {"after_seq"},
        "message": {"body", "client_msg_id"},
        "typing": {"state"},
        "close": set(),
        "ping": set(),
        "read": {"seq"},
        "rating": {"score", "comment"},
    },
    "agent": {
        "resume": {"conversation_id", "after_seq"},
        "message": {"conversation_id", "body", "client_msg_id"},
        "typing": {"conversation_id", "state"},
        "close": {"conversation_id"},
        "claim": {"conversation_id"},
        "transfer": {"conversation_id", "to"},
        "ping": set(),
        "read": {"conversation_id", "seq"},
        "note": {"conversation_id", "body", "client_msg_id"},
    },
}
# The same with "type": the keys a frame may have, checked with one set difference.
_KEYS = {audience: {kind: frozenset(fields | {"type"}) for kind, fields in kinds.items()}
         for audience, kinds in _FIELDS.items()}


def _load(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        raise ProtocolError("binary_not_supported", "Frames must be JSON text, not binary.")
    if len(text) > MAX_FRAME_BYTES // 4 and len(text.encode()) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", "Frames must be at most 64 KiB.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # ValueError also covers integers too long to read
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_frame", "A frame must be a JSON object with a type.")
    return data


def _text(value: str, key: str) -> str:
    """JSON may escape a lone surrogate, which no UTF-8 text can hold."""
    if value.isascii():  # most text, and no surrogate: no need to encode it to know
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("invalid_field", f"'{key}' is not valid Unicode text.") from None
    return value


def _str(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError("invalid_field", f"'{key}' must be a non-empty string.")
    if len(value) > limit:
        raise ProtocolError("invalid_field", f"'{key}' must be at most {limit} characters.")
    return _text(value, key)


def _body(data: dict[str, Any]) -> str:
    value = data.get("body")
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError("invalid_field", "'body' must be a non-empty string.")
    if len(value) > MAX_BODY_CHARS:
        raise ProtocolError(
            "body_too_long", f"A message may hold at most {MAX_BODY_CHARS} characters."
        )
    if "\x00" in value:
        raise ProtocolError("invalid_field", "'body' must not contain NUL characters.")
    return _text(value, "body")


def _seq(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise ProtocolError("invalid_field", f"'{key}' must be a whole number >= 0.")
    return value


def _rating(data: dict[str, Any]) -> Rating:
    score = data.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ProtocolError("invalid_score", "'score' must be a whole number from 1 to 5.")
    comment = data.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise ProtocolError("invalid_field", "'comment' must be text.")
    if len(comment) > MAX_RATING_COMMENT:
        raise ProtocolError("invalid_field",
                            f"'comment' may hold at most {MAX_RATING_COMMENT} characters.")
    if "\x00" in comment:
        raise ProtocolError("invalid_field", "'comment' must not contain NUL characters.")
    return Rating(score=score, comment=_text(comment.strip(), "comment"))


def parse(text: str | bytes, audience: Audience) -> Frame:
    """Validate one client frame for `audience`; raise ProtocolError on anything amiss."""
    data = _load(text)
    kind = data.get("type")
    allowed = _FIELDS[audience]
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolError("unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")
    extra = data.keys() - _KEYS[audience][kind]
    if extra:
        names = ", ".join(sorted(str(k)[:40] for k in extra)[:5])
        raise ProtocolError("unknown_field", f"Unexpected field(s) for '{kind}': {names}.")
    conv = (
        _str(data, "conversation_id", MAX_CONVERSATION_ID)
        if "conversation_id" in allowed[kind]
        else None
    )
    if kind == "message":
        return Message(
            body=_body(data),
            client_msg_id=_str(data, "client_msg_id", MAX_CLIENT_MSG_ID),
            conversation_id=conv,
        )
    if kind == "note":
        assert conv is not None
        return Note(body=_body(data), client_msg_id=_str(data, "client_msg_id",
                                                         MAX_CLIENT_MSG_ID),
                    conversation_id=conv)
    if kind == "rating":
        return _rating(data)
    if kind == "resume":
        return Resume(after_seq=_seq(data, "after_seq"), conversation_id=conv)
    if kind == "read":
        return Read(seq=_seq(data, "seq"), conversation_id=conv)
    if kind == "typing":
        state = data.get("state")
        if not isinstance(state, bool):
            raise ProtocolError("invalid_field", "'state' must be true or false.")
        return Typing(state=state, conversation_id=conv)
    if kind == "close":
        return Close(conversation_id=conv)
    if kind == "claim":
        assert conv is not None
        return Claim(conversation_id=conv)
    if kind == "transfer":
        assert conv is not None
        if "to" not in data:
            raise ProtocolError("invalid_field", "'to' must name a staff member, or be null for "
                                "the queue.")
        to = None if data["to"] is None else _str(data, "to", MAX_STAFF_NAME).strip()
        return Transfer(conversation_id=conv, to=to)
    return Ping()


def _dump_json(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _fast_dumper() -> Callable[[dict[str, Any]], str] | None:
    """orjson when installed (the `fast` extra): the same text a dozen times faster. What it
    would write differently, or refuses (a lone surrogate, an integer past 64 bits, str or dict
    subclasses, datetimes, dataclasses), goes to the standard library instead."""
    try:
        import orjson
    except ImportError:
        return None
    options = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
               | orjson.OPT_PASSTHROUGH_DATACLASS)
    fast_dumps = orjson.dumps

    def dump_fast(frame: dict[str, Any]) -> str:
        try:
            return fast_dumps(frame, option=options).decode()
        except TypeError:  # orjson.JSONEncodeError is one
            return _dump_json(frame)

    return dump_fast


_dump = _fast_dumper() or _dump_json


def dump(frame: dict[str, Any]) -> str:
    """Serialise a server frame compactly; keys keep their insertion order. Each frame is
    dumped once and the text shared by every socket that gets it."""
    return _dump(frame)


# The front of a message (or message_ref) frame as dump writes it, keys in this order: whoever
# only needs the conversation, seq and sender reads them here instead of parsing all of it.
_MESSAGE_HEAD = re.compile(
    r'\{"type":"message(?:_ref)?","conversation_id":"([^"\\]*)","seq":(\d+)'
    r'(?:,"sender":"([a-z]+)")?[,}]')


Head = tuple[str, int, str | None]
# The last frame read and its head. One published text reaches every socket that follows the
# conversation, and each asks again when it is sent: the same object, read once.
_last: tuple[str, Head] = ("", ("", 0, None))


def message_head(text: str) -> Head:
    """Conversation id, seq and sender (None for a message_ref) of a published message frame."""
    global _last
    last = _last  # read once: another thread may replace it meanwhile
    if last[0] is text:
        return last[1]
    found = _MESSAGE_HEAD.match(text)
    if found is not None:
        head: Head = (found.group(1), int(found.group(2)), found.group(3))
    else:
        frame = json.loads(text)  # written some other way: read it whole
        head = (frame["conversation_id"], frame["seq"], frame.get("sender"))
    _last = (text, head)
    return head


NOTE_PREFIX = '{"type":"message","sender":"note"'


def note_frame(note: NoteRecord) -> dict[str, Any]:
    """A note as staff receive it: a `message` with sender "note". It takes no seq of its own:
    `seq` is the message it follows, `note_id` tells it apart. Never sent to a visitor."""
    return {  # "sender" second: the visitors' listener drops frames by this prefix
        "type": "message",
        "sender": "note",
        "conversation_id": note.conversation_id,
        "seq": note.after_seq,
        "note_id": note.id,
        "author": note.author,
        "body": note.body,
        "sent_at": note.created_at,
        "client_msg_id": note.client_msg_id,
    }


def rating_frame(rating: RatingRecord) -> dict[str, Any]:
    """A stored rating, to the visitor who gave it and to staff."""
    return {"type": "rating", "conversation_id": rating.conversation_id, "score": rating.score,
            "comment": rating.comment, "rated_at": rating.rated_at}


def read_frame(conversation_id: str, seq: int, sender: str) -> dict[str, Any]:
    """`read` as relayed to the other side: `sender` (visitor or agent) saw up to `seq`."""
    return {"type": "read", "conversation_id": conversation_id, "seq": seq, "sender": sender}


MAILED_PREFIX = '{"type":"mailed"'


def mailed_frame(conversation_id: str, seq: int) -> dict[str, Any]:
    """To staff: the agent replies up to `seq` went to the customer by email (they were not
    seen in time, and the mail server took the mail). Never sent to a visitor."""
    return {"type": "mailed", "conversation_id": conversation_id, "seq": seq}


VISITOR_PRESENCE_PREFIX = '{"type":"presence","conversation_id"'


def visitor_presence_frame(conversation_id: str, online: bool) -> dict[str, Any]:
    """To staff: whether the customer has the conversation open (a socket) in any process.
    Never sent to a visitor (theirs is presence_frame, about agents)."""
    return {"type": "presence", "conversation_id": conversation_id, "visitor_online": online}


def presence_frame(agents_online: bool) -> dict[str, Any]:
    """Whether an agent is online, sent to visitors whenever that changes."""
    return {"type": "presence", "agents_online": agents_online}


def broadcast_restored_frame() -> dict[str, Any]:
    """The shared broadcast is back after a `broadcast_unavailable` error: live frames flow again
    (what was missed follows from storage), so clients clear their notice at once."""
    return {"type": "broadcast_restored"}


def error(code: str, message: str) -> dict[str, str]:
    return {"type": "error", "code": code, "message": message}
