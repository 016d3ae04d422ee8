"""A bare relay to measure the chat server against: Starlette + uvicorn, rooms of two, nothing else.

No storage, no consent, no cookies, no rate limits. `/ws/{room}` admits two peers; each text frame
`{"type": "message", "body", "client_msg_id"}` is acked to its sender at once
(`{"type": "ack", "client_msg_id"}`) and relayed to the other peer as
`{"type": "message", "room", "body", "client_msg_id"}`. A third peer is refused with close 1008.

Run it with the same uvicorn settings as `chatserver serve` (asyncio loop, h11, the `websockets`
implementation, no per-message deflate, no access log):

    python bench/baseline.py --port 8001

`python bench/load.py --baseline` starts it by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

WS_MAX_BYTES = 64 * 1024  # as chatserver.cli


class Peer:
    """One socket of a room; a lock keeps its ack and the relays from the other peer apart."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_text(text)


ROOMS: dict[str, list[Peer]] = {}


def dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def relay(ws: WebSocket) -> None:
    room = str(ws.path_params["room"])
    peers = ROOMS.setdefault(room, [])
    if len(peers) >= 2:
        await ws.close(1008)
        return
    await ws.accept()
    me = Peer(ws)
    peers.append(me)
    try:
        await me.send(dump({"type": "welcome", "room": room, "peers": len(peers)}))
        while True:
            text = await ws.receive_text()
            try:
                frame = json.loads(text)
            except json.JSONDecodeError:
                frame = None
            if not isinstance(frame, dict) or frame.get("type") != "message":
                await me.send(dump({"type": "error", "code": "unknown_type", "message": "?"}))
                continue
            cmid = frame.get("client_msg_id")
            await me.send(dump({"type": "ack", "client_msg_id": cmid}))
            out = dump({"type": "message", "room": room, "body": frame.get("body"),
                        "client_msg_id": cmid})
            for peer in list(peers):
                if peer is not me:
                    with contextlib.suppress(Exception):  # the other peer left; its loop cleans up
                        await peer.send(out)
    except (WebSocketDisconnect, RuntimeError, KeyError):
        pass
    finally:
        peers.remove(me)
        if not peers:
            ROOMS.pop(room, None)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws/{room}", relay)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ws_max_size=WS_MAX_BYTES,
        ws_per_message_deflate=False,
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
