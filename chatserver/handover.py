"""Handing a conversation over: transfer to a named agent, release to the queue, take over.

Who may do what (`plan`, no I/O beyond look-ups) is kept apart from doing it (`transfer`):

- the agent handling a conversation may hand it to another active agent who is not away, or
  release it to the queue;
- any agent may take over a conversation whose agent has no dashboard open (in any process,
  with a shared broadcast) or is away;
- admins may do any of these to any open conversation.

The move itself is one conditional UPDATE in the store, conditional on the agent that was read
here, so of two rival moves exactly one wins and the other gets `already_claimed`, as a losing
claim does. Then, in order: the receiving agent's sockets follow the conversation, one system
message (display names only: customers read it) says what happened, a `status` frame tells both
sides who has it now (the giving agent's sockets stop following it on seeing it), the queue is
refreshed. The audit log records it first, before anyone is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import audit
from .errors import AlreadyClaimed, Conflict, ConversationClosed, Forbidden, NotFound
from .hub import Hub, staff_channel, staff_notice
from .storage.base import Conversation, Staff

Kind = Literal["transfer", "release", "takeover", "reassign", "requeue"]


@dataclass(frozen=True, slots=True)
class Plan:
    kind: Kind
    conversation: Conversation
    target: Staff | None  # None: back to the queue


async def _target(hub: Hub, to: str) -> Staff:
    target = await hub.store.get_staff_by_name(to)
    if target is None:
        raise NotFound("No staff member has that name.", code="unknown_agent")
    if target.state != "active":
        raise Conflict("That account is disabled; choose someone else.", code="agent_disabled")
    return target


async def plan(hub: Hub, actor: Staff, conversation_id: str, to: str | None) -> Plan:
    """What `actor` asking to hand `conversation_id` to `to` (None: the queue) would do, or the
    ChatError saying why not. Changes nothing."""
    conversation = await hub.store.get_conversation(conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    if conversation.status == "closed":
        raise ConversationClosed()
    target = await _target(hub, to) if to is not None else None
    holder = conversation.agent_id
    admin = actor.role == "admin"
    if target is not None and target.id == holder:
        if holder == actor.id:
            raise Conflict("The conversation is yours already.", code="transfer_to_self")
        raise Conflict("That agent handles the conversation already.", code="already_assigned")
    if target is None and holder is None:
        raise Conflict("The conversation is waiting in the queue already.",
                       code="already_queued")
    if target is not None and target.id == actor.id:
        if holder is None:
            raise Conflict("The conversation is in the queue: claim it.", code="not_claimed")
        assert holder is not None
        if not admin and await hub.agent_available_now(holder):
            raise Forbidden("Its agent has the dashboard open; ask them to transfer it to you.",
                            code="agent_present")
        return Plan("takeover", conversation, target)
    if holder == actor.id:
        kind: Kind = "transfer" if target is not None else "release"
    elif admin:
        kind = "reassign" if target is not None else "requeue"
    else:
        raise Forbidden("That conversation is not yours to hand over.", code="not_yours")
    if target is not None and target.id in await hub.store.away_staff():
        raise Conflict("That agent is away and takes no conversations now.", code="agent_away")
    return Plan(kind, conversation, target)


def _ending(name: str) -> str:
    """A name at the end of a sentence, without a second full stop ("Ann A.")."""
    return name if name.endswith(".") else name + "."


def notice(p: Plan, actor: Staff) -> str:
    """The system message: display names only, since the customer reads it."""
    to = p.target.display_name if p.target is not None else ""
    if p.kind == "transfer":
        return f"{actor.display_name} handed the conversation over to {_ending(to)}"
    if p.kind == "takeover":
        return f"{to} took over the conversation."
    if p.kind == "reassign":
        return f"The conversation was handed over to {_ending(to)}"
    if p.kind == "release":
        return f"{actor.display_name} left the conversation; the next available agent will " \
               "take over."
    return "The conversation is waiting for the next available agent."


async def transfer(hub: Hub, actor: Staff, conversation_id: str, to: str | None, *,
                   ip: str | None) -> Conversation:
    """Carry out a transfer, release, takeover or reassignment; the conversation as it now is.
    Raises what `plan` raises, and AlreadyClaimed when a rival move won."""
    p = await plan(hub, actor, conversation_id, to)
    holder = p.conversation.agent_id
    moved, won = await hub.store.move_conversation(
        conversation_id, expect_agent_id=holder,
        to_agent_id=p.target.id if p.target is not None else None)
    if not won:
        if moved.status == "closed":
            raise ConversationClosed()
        raise AlreadyClaimed("Someone else changed this conversation first; look again.")
    # Recorded before anyone hears of it: whoever sees the move finds it in the log.
    await audit.record(
        hub.store, actor=f"staff:{actor.id}", action=f"conversation.{p.kind}", ip=ip,
        target=f"conversation:{conversation_id}",
        detail={"from": f"staff:{holder}" if holder is not None else None,
                "to": f"staff:{p.target.id}" if p.target is not None else None},
    )
    if p.target is not None:
        # First, so the receiving agent's tabs follow it before its news.
        await hub.broadcast.publish(staff_channel(p.target.id),
                                    staff_notice(conversation_id, moved.last_seq))
    await hub.post(conversation_id, sender="system", sender_id="system", author="system",
                   body=notice(p, actor), client_msg_id=None)
    await hub.publish_status(moved, previous_agent_id=holder)
    hub.queue_changed()
    return moved
