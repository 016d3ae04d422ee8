"""The OpenAPI document of the JSON routes, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "chatserver", "version": __version__},
        "paths": {
            "/api/policy": {
                "get": {
                    "summary": "The current privacy policy",
                    "responses": {"200": {"description": "the policy"}},
                }
            },
        },
        "components": {"schemas": {"Error": ERROR}},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


routes = [Route("/api/openapi.json", openapi)]
