"""What every HTTP handler needs: app state, identity, origins, JSON bodies, cookies, pages."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.templating import Jinja2Templates

from .. import __version__, metrics
from ..broadcast import Broadcast
from ..consent import Policies
from ..errors import (
    BadRequest,
    ChatError,
    Forbidden,
    ForeignOrigin,
    NotSignedIn,
    TooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from ..hub import Hub
from ..limits import Limits
from ..mail import Mailer
from ..mail.throttle import MailThrottle
from ..sessions import (
    DEVICE_COOKIE,
    SECURE_DEVICE_COOKIE,
    SECURE_STAFF_COOKIE,
    STAFF_COOKIE,
    VISITOR_COOKIE,
    VISITOR_MAX_AGE,
    Signer,
    hash_id,
)
from ..settings import Settings
from ..storage.base import Staff, Store, VisitorSession, iso

MAX_BODY_BYTES = 64 * 1024


def asset_dir(name: str) -> Path:
    """`static/` or `templates/`: inside the installed package, else at the repository root."""
    package = Path(__file__).resolve().parent.parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name


@dataclass
class AppState:
    settings: Settings
    store: Store
    broadcast: Broadcast
    limits: Limits
    hub: Hub
    policies: Policies
    signer: Signer
    templates: Jinja2Templates
    mailer: Mailer
    mail_throttle: MailThrottle


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.chat
    return state


def client_ip(conn: HTTPConnection) -> str | None:
    return conn.client.host if conn.client else None


def user_agent(conn: HTTPConnection) -> str | None:
    agent = conn.headers.get("user-agent")
    return agent[:512] if agent else None


def own_origin(conn: HTTPConnection) -> str:
    scheme = "https" if conn.url.scheme in {"https", "wss"} else "http"
    return f"{scheme}://{conn.headers.get('host', '')}".lower()


def is_https(conn: HTTPConnection) -> bool:
    return conn.url.scheme in {"https", "wss"}


def origin_allowed(conn: HTTPConnection, origin: str | None) -> bool:
    """No Origin (a script, not a browser) is judged by cookies alone; else an exact match."""
    if origin is None:
        return True
    origin = origin.lower()
    return origin == own_origin(conn) or origin in app_state(conn).settings.allowed_origins


def check_origin(conn: HTTPConnection) -> None:
    if not origin_allowed(conn, conn.headers.get("origin")):
        raise ForeignOrigin()
    if conn.headers.get("sec-fetch-site") == "cross-site" and conn.headers.get("origin") is None:
        raise ForeignOrigin()


async def read_search(request: Request, fields: set[str]) -> dict[str, Any]:
    """A search body: a JSON object of the given fields, none of them null (leave a filter out
    to not filter), so the OpenAPI document and the handler agree."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("Send the search as a JSON object.")
    nulls = sorted(str(k)[:40] for k, v in body.items() if v is None)
    if nulls:
        raise ValidationFailed(f"{nulls[0]} may not be null.", field=nulls[0])
    unknown = set(body) - fields
    if unknown:
        name = sorted(str(k)[:40] for k in unknown)[0]
        raise ValidationFailed(f"Unknown field {name!r}.", field=name, code="unknown_field")
    return body


async def read_json(request: Request) -> Any:
    """The request's JSON body, after the origin, media type and size checks."""
    check_origin(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType()
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge("Request bodies may be at most 64 KiB.")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks) or b"null")
        # JSON may escape a lone surrogate ("\ud800"), which no UTF-8 text can hold: refuse it
        # here rather than fail later when the value is stored, logged or sent.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        raise BadRequest("The body is not valid JSON text.", code="invalid_json") from None
    return data


def secure_cookie(conn: HTTPConnection) -> bool:
    forced = app_state(conn).settings.secure_cookies
    return is_https(conn) if forced is None else forced


def set_cookie(
    response: Response,
    conn: HTTPConnection,
    name: str,
    value: str,
    *,
    max_age: int | None,
    samesite: str = "lax",
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite=samesite,  # type: ignore[arg-type]
        secure=secure_cookie(conn),
    )


def set_visitor_cookie(response: Response, conn: HTTPConnection, value: str, max_age: int,
                       name: str = VISITOR_COOKIE) -> None:
    """The widget's cookies must reach the server from an iframe on the customer's own site.

    Under HTTPS they are `SameSite=None; Secure; Partitioned`: sent from the embedding site, and
    kept in that site's partition only, so they cannot follow the visitor to other sites. Over
    plain HTTP (local trials) browsers refuse SameSite=None, so they are Lax there.
    """
    if secure_cookie(conn):
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                            samesite="none", secure=True)
        # Starlette writes the Partitioned attribute only on Python 3.14+; add it ourselves.
        for index in range(len(response.raw_headers) - 1, -1, -1):
            key, header = response.raw_headers[index]
            if key == b"set-cookie" and header.startswith(name.encode() + b"="):
                response.raw_headers[index] = (key, header + b"; Partitioned")
                break
    else:
        set_cookie(response, conn, name, value, max_age=max_age)


def staff_cookie_name(conn: HTTPConnection) -> str:
    """Under HTTPS the staff cookie takes the __Host- prefix: browsers then insist on Secure,
    Path=/ and no Domain, so no sibling subdomain can plant or read it. Only that name is set
    there, and only that name is read: a plain `chat_staff` beside it could have been planted
    (by a sibling subdomain, or over plain HTTP)."""
    return SECURE_STAFF_COOKIE if secure_cookie(conn) else STAFF_COOKIE


def device_cookie_name(conn: HTTPConnection) -> str:
    """The known-device cookie follows the staff cookie's naming (see staff_cookie_name)."""
    return SECURE_DEVICE_COOKIE if secure_cookie(conn) else DEVICE_COOKIE


def set_staff_cookie(response: Response, conn: HTTPConnection, value: str) -> None:
    set_cookie(response, conn, staff_cookie_name(conn), value, max_age=None, samesite="strict")


def clear_staff_cookie(response: Response, conn: HTTPConnection) -> None:
    for name in (STAFF_COOKIE, SECURE_STAFF_COOKIE):
        if name in conn.cookies:
            clear_cookie(response, conn, name, "strict")


def clear_visitor_cookie(response: Response, conn: HTTPConnection) -> None:
    """Expire the visitor cookie with the attributes it was set with, or an embedded browser
    (partitioned, cross-site) would ignore the deletion."""
    set_visitor_cookie(response, conn, "", 0)


def clear_cookie(response: Response, conn: HTTPConnection, name: str, samesite: str) -> None:
    response.delete_cookie(
        name, path="/", httponly=True, samesite=samesite,  # type: ignore[arg-type]
        secure=secure_cookie(conn),
    )


def query_int(conn: HTTPConnection, name: str, default: int, high: int) -> int:
    """A whole-number query parameter between 0 and `high`, or a 422 naming it."""
    raw = conn.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number.", field=name) from None
    if not 0 <= value <= high:
        raise ValidationFailed(f"{name} must be between 0 and {high}.", field=name)
    return value


# Control characters in a search: SQLite reads a LIKE pattern up to a NUL, so "\x00" would
# match everything; none of them can be typed into a search box anyway.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def text_filter(value: Any, name: str, limit: int) -> str | None:
    """A free-text filter (a search, an email, an audit actor) as given, or None when absent or
    blank; 422 naming it when it is not text, too long or holds control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be text.", field=name)
    if len(value) > limit:
        raise ValidationFailed(f"{name} may have at most {limit} characters.", field=name)
    if _CONTROL.search(value):
        raise ValidationFailed(f"{name} contains characters that are not allowed.", field=name)
    return value.strip() or None


def body_int(body: dict[str, Any], name: str, default: int, high: int) -> int:
    """A whole number in a JSON body between 0 and `high`, or a 422 naming it."""
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ValidationFailed(f"{name} must be a whole number between 0 and {high}.",
                               field=name)
    return value


# -- identity ---------------------------------------------------------------------------------


def visitor_session_hash(conn: HTTPConnection) -> str | None:
    """The session the visitor cookie names, unless forged or older than the lifetime the
    cookie was set with: the signature's timestamp is checked here, so a browser (or anyone)
    that keeps sending the cookie after its max-age has no session any more."""
    raw = app_state(conn).signer.unsign(VISITOR_COOKIE, conn.cookies.get(VISITOR_COOKIE),
                                        VISITOR_MAX_AGE)
    return hash_id(raw) if raw else None


async def current_visitor(conn: HTTPConnection) -> VisitorSession | None:
    session_hash = visitor_session_hash(conn)
    if session_hash is None:
        return None
    return await app_state(conn).store.get_visitor_session(session_hash)


def staff_session_hash(conn: HTTPConnection) -> str | None:
    value = conn.cookies.get(staff_cookie_name(conn))
    raw = app_state(conn).signer.unsign(STAFF_COOKIE, value)
    return hash_id(raw) if raw else None


async def current_staff(conn: HTTPConnection) -> Staff | None:
    session_hash = staff_session_hash(conn)
    if session_hash is None:
        return None
    return await staff_for_session(conn, session_hash)


async def staff_for_session(conn: HTTPConnection, session_hash: str) -> Staff | None:
    state = app_state(conn)
    idle = state.store.clock() - timedelta(minutes=state.settings.staff_idle_minutes)
    return await state.store.get_staff_session(session_hash, iso(idle))


async def require_staff(conn: HTTPConnection, role: str | None = None) -> Staff:
    staff = await current_staff(conn)
    if staff is None:
        raise NotSignedIn()
    if role == "admin" and staff.role != "admin":
        raise Forbidden("Only admins may do that.")
    return staff


# -- responses --------------------------------------------------------------------------------


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    state = app_state(request)
    response: HTMLResponse = state.templates.TemplateResponse(
        request, name,
        # What the operator tells customers about themselves, on every page that shows it.
        {"version": __version__, "organisation": state.settings.organisation,
         "on_behalf_consent": state.settings.on_behalf_consent, **context},
        status_code=status,
    )
    return response


def error_response(request: HTTPConnection, exc: ChatError) -> Response:
    if exc.status == 429:
        metrics.rate_limited(exc.code)
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
        "accept", ""
    ):
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    return page(
        request,  # type: ignore[arg-type]
        "error.html",
        {"title": "Something is not right", "message": exc.message, "status": exc.status},
        status=exc.status,
    )
