"""GET /metrics: Prometheus' text format, for the addresses in CHATSERVER_METRICS_ALLOW only.

Anyone else gets the same 404 as a path that does not exist: the numbers (how busy the support
team is, how often limits refuse) are nobody else's business, and a 403 would say there is
something to see. A request relayed by a proxy that is not trusted (CHATSERVER_TRUSTED_PROXIES)
is refused too: its peer is the proxy, which may be relaying anyone on the internet.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import metrics, proxies
from .common import app_state, client_ip


async def metrics_page(request: Request) -> Response:
    allowed = app_state(request).settings.metrics_allow
    if proxies.sent_through_unknown_proxy(request.scope) or not proxies.within(
            client_ip(request), allowed):
        raise HTTPException(404)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


routes = [Route("/metrics", metrics_page)]
