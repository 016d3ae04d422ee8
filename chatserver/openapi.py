"""The OpenAPI document of the JSON routes, served at /api/openapi.json.

It describes every route under /api/ (and GET /metrics, which answers text) with the validation
the handlers apply: field names, types, lengths and patterns, and the errors each can answer with.
tests/test_openapi.py checks that it names every /api route of the app's route table and fuzzes
the running server with it.
HEAD is implied wherever GET is listed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, reports
from .staff_names import MAX_DISPLAY_NAME
from .web import admin, admin_privacy, admin_staff

Schema = dict[str, Any]
Operation = dict[str, Any]

ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable machine-readable code"},
        "message": {"type": "string", "description": "for people; never holds PII"},
        "field": {"type": "string", "description": "the request field at fault, if any"},
    },
}

# -- schemas ------------------------------------------------------------------------------------

_TIME: Schema = {"type": "string", "format": "date-time"}
_TIME_OR_NULL: Schema = {**_TIME, "nullable": True}
_DATE: Schema = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_MOMENT: Schema = {"anyOf": [_DATE, _TIME],
                   "description": "a day (YYYY-MM-DD) or an ISO 8601 time; UTC unless it says"}
_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 100,
                 "description": "1-100 characters after runs of white space become one space; "
                                "no control characters"}
_EMAIL: Schema = {"type": "string", "format": "email", "maxLength": 254,
                  "description": "one address: no commas, semicolons, spaces or second @"}
_COMPANY: Schema = {"type": "string", "maxLength": 200, "nullable": True,
                    "description": "up to 200 characters; null or absent means none"}
_PASSWORD: Schema = {"type": "string", "minLength": 12, "maxLength": 128,
                     "description": "12-128 characters without control characters, not a common "
                                    "password, strong enough by the zxcvbn estimate (score 3 of "
                                    "4), not containing "
                                    "the account name"}
_ROLE: Schema = {"type": "string", "enum": ["agent", "admin"]}
_DISPLAY_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_DISPLAY_NAME,
                         "description": "what customers see; never a sign-in name, else 422"}
# Free text in a search or filter: no control characters (a NUL would match everything).
_NO_CONTROLS = r"^[^\u0000-\u001f\u007f]*$"


def _words(limit: int, description: str = "") -> Schema:
    schema: Schema = {"type": "string", "maxLength": limit, "pattern": _NO_CONTROLS}
    if description:
        schema["description"] = description
    return schema


_Q = _words(admin.QUERY_CHARS,
            "words in the customer's details or the messages; empty means no filter")
_EMAIL_FILTER = _words(admin.EMAIL_CHARS, "the customer's exact email; empty means no filter")
_STATUS: Schema = {"type": "string", "enum": ["queued", "active", "closed"]}
_AGENT: Schema = {"type": "integer", "format": "int64", "minimum": 0,
                  "description": "a staff id"}

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Customer": {
        "type": "object",
        "required": ["name", "email", "company"],
        "properties": {"name": {"type": "string"}, "email": {"type": "string"},
                       "company": {"type": "string"}},
    },
    "CustomerInput": {
        "type": "object",
        "description": "The pre-chat form. Any cc or bcc field (or one ending in _cc/_bcc) or a "
                       "second address is refused with 422 cc_not_allowed.",
        "required": ["name", "email"],
        "additionalProperties": False,
        "properties": {"name": _NAME, "email": _EMAIL, "company": _COMPANY},
    },
    "CustomerPatch": {
        "type": "object",
        "description": "Only the fields present are checked and changed.",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {"name": _NAME, "email": _EMAIL, "company": _COMPANY},
    },
    "Consent": {
        "type": "object",
        "required": ["policy_version"],
        "additionalProperties": False,
        "properties": {
            "policy_version": {"type": "string", "maxLength": 32,
                               "description": "must be the current version, else 409"},
            "policy_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                              "description": "the sha256 of the text shown; must be the "
                                             "current one's when given"},
            "on_behalf": {"type": "boolean", "default": False},
            "method": {"type": "string", "enum": ["widget", "account"], "default": "widget"},
        },
    },
    "ConsentReceipt": {
        "type": "object",
        "required": ["policy_version", "given_at"],
        "properties": {"policy_version": {"type": "string"}, "given_at": _TIME},
    },
    "Policy": {
        "type": "object",
        "required": ["version", "effective_date", "summary", "sha256", "html"],
        "properties": {"version": {"type": "string"}, "effective_date": {"type": "string"},
                       "summary": {"type": "string"}, "sha256": {"type": "string"},
                       "html": {"type": "string"}},
    },
    "PolicyVersion": {
        "type": "object",
        "required": ["version", "effective_date", "summary", "sha256", "published_at"],
        "properties": {"version": {"type": "string"}, "effective_date": {"type": "string"},
                       "summary": {"type": "string"}, "sha256": {"type": "string"},
                       "published_at": _TIME},
    },
    "PolicyInput": {
        "type": "object",
        "required": ["version", "effective_date", "summary", "text"],
        "properties": {
            "version": {"type": "string", "pattern": r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,31}$",
                        "maxLength": 32, "description": "new and unique, else 409"},
            "effective_date": {**_DATE, "description": "a day of the calendar from 2000-01-01 "
                                                        "to a year from today, else 422"},
            "summary": {"type": "string", "minLength": 1, "maxLength": 2000,
                        "description": "the summary of changes; not only white space"},
            "text": {"type": "string", "minLength": 1,
                     "description": "the policy in Markdown; not only white space"},
        },
    },
    "Login": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string", "maxLength": 100},
                       "password": {"type": "string", "maxLength": 128}},
    },
    "Staff": {
        "type": "object",
        "required": ["id", "name", "role", "state"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "display_name": {"type": "string"}, "role": _ROLE,
                       "state": {"type": "string", "enum": ["active", "disabled"]},
                       "away": {"type": "boolean", "description": "/api/staff/me only"}},
    },
    "ProfilePatch": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {"display_name": _DISPLAY_NAME, "away": {"type": "boolean"}},
    },
    "Colleague": {
        "type": "object",
        "required": ["name", "display_name", "role", "away", "online"],
        "properties": {"name": {"type": "string"}, "display_name": {"type": "string"},
                       "role": _ROLE, "away": {"type": "boolean"},
                       "online": {"type": "boolean"}},
    },
    "StaffItem": {
        "allOf": [{"$ref": "#/components/schemas/Staff"}, {
            "type": "object",
            "properties": {"created_at": _TIME, "last_login": _TIME_OR_NULL},
        }],
    },
    "StaffInput": {
        "type": "object",
        "required": ["name", "role", "password"],
        "properties": {
            "name": {"type": "string", "pattern": r"^\S{1,100}$", "minLength": 1,
                     "maxLength": 100, "description": "unique, else 409"},
            "role": _ROLE,
            "password": _PASSWORD,
            "display_name": _DISPLAY_NAME,
        },
    },
    "StaffPatch": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "role": {**_ROLE, "nullable": True},
            "state": {"type": "string", "enum": ["active", "disabled"], "nullable": True},
            "display_name": {**_DISPLAY_NAME, "nullable": True},
        },
    },
    "PasswordInput": {
        "type": "object",
        "required": ["password"],
        "properties": {"password": _PASSWORD},
    },
    "LegalHold": {
        "type": "object",
        "required": ["hold"],
        "properties": {"hold": {"type": "boolean"}},
    },
    "Purge": {
        "type": "object",
        "properties": {"dry_run": {"type": "boolean", "default": True}},
    },
    "ConversationSearch": {
        "type": "object",
        "description": "The filters of GET /api/admin/conversations, in a body: search words "
                       "and emails stay out of URLs (and so out of proxies' logs).",
        "additionalProperties": False,
        "properties": {
            "q": _Q, "email": _EMAIL_FILTER, "status": _STATUS, "agent": _AGENT,
            "from": {**_DATE, "description": "created on or after this day (UTC)"},
            "to": {**_DATE, "description": "created on or before this day (UTC)"},
            "limit": {"type": "integer", "minimum": 0, "maximum": 200, "default": 50},
            "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
        },
    },
    "CustomerSearch": {
        "type": "object",
        "description": "The search of GET /api/admin/customers, in a body.",
        "additionalProperties": False,
        "properties": {
            "q": _words(admin_privacy.QUERY_CHARS,
                        "words in a customer's name, email or company, or an id"),
            "limit": {"type": "integer", "minimum": 0, "maximum": 200, "default": 50},
            "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
        },
    },
    "Message": {
        "type": "object",
        "required": ["type", "conversation_id", "seq", "sender", "author", "body", "sent_at"],
        "properties": {
            "type": {"type": "string", "enum": ["message"]},
            "conversation_id": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "sender": {"type": "string", "enum": ["visitor", "agent", "system"]},
            "author": {"type": "string", "nullable": True},
            "body": {"type": "string"},
            "sent_at": _TIME,
            "client_msg_id": {"type": "string", "nullable": True},
        },
    },
    "ConversationSummary": {
        "type": "object",
        "required": ["id", "customer_id", "status", "created_at", "last_seq", "customer"],
        "properties": {
            "id": {"type": "string"},
            "customer_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "active", "closed"]},
            "agent_id": {"type": "integer", "nullable": True},
            "agent_name": {"type": "string", "nullable": True},
            "agent_display_name": {"type": "string", "nullable": True},
            "created_at": _TIME,
            "claimed_at": _TIME_OR_NULL,
            "closed_at": _TIME_OR_NULL,
            "last_seq": {"type": "integer"},
            "last_message_at": _TIME_OR_NULL,
            "customer": {"type": "object"},
            "policy_version": {"type": "string", "nullable": True},
            "message_count": {"type": "integer"},
            "last_message": {"type": "object", "nullable": True},
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "at", "actor", "action", "hash"],
        "properties": {
            "id": {"type": "integer"}, "at": _TIME, "actor": {"type": "string"},
            "action": {"type": "string"}, "ip": {"type": "string", "nullable": True},
            "target": {"type": "string", "nullable": True}, "detail": {},
            "prev_hash": {"type": "string"}, "hash": {"type": "string"},
        },
    },
    "AddressInput": {
        "type": "object",
        "description": "One address. A second address, any cc or bcc field (or one ending in "
                       "_cc/_bcc) is refused with 422 cc_not_allowed; a to, address, recipient(s) "
                       "or reply_to field with 422 recipient_not_allowed.",
        "required": ["email"],
        "additionalProperties": False,
        "properties": {"email": _EMAIL},
    },
    "TranscriptMailInput": {
        "type": "object",
        "description": "The transcript goes to the customer's own address on file: a field "
                       "naming any recipient is refused (422 cc_not_allowed or "
                       "recipient_not_allowed).",
        "required": ["conversation_id"],
        "additionalProperties": False,
        "properties": {"conversation_id": {"type": "string", "minLength": 1, "maxLength": 64}},
    },
    "Accepted": {
        "type": "object",
        "required": ["accepted", "message"],
        "properties": {"accepted": {"type": "boolean"}, "message": {"type": "string"}},
    },
    "OutboxMail": {
        "type": "object",
        "description": "One mail of the outbox: never its address or content.",
        "required": ["id", "kind", "status", "attempts", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string",
                     "enum": ["signin", "terminate", "reply", "transcript", "farewell"]},
            "status": {"type": "string",
                       "enum": ["pending", "sending", "sent", "failed", "dropped"]},
            "attempts": {"type": "integer"},
            "last_error": {"type": "string", "nullable": True},
            "conversation_id": {"type": "string", "nullable": True},
            "created_at": _TIME, "next_attempt_at": _TIME, "sent_at": _TIME_OR_NULL,
        },
    },
    "Erased": {
        "type": "object",
        "required": ["erased", "erasure_id"],
        "properties": {"erased": {"type": "boolean"}, "erasure_id": {"type": "string"},
                       "counts": {"type": "object",
                                  "additionalProperties": {"type": "integer"}}},
    },
}

# -- responses ----------------------------------------------------------------------------------

_ERRORS: dict[str, tuple[str, str]] = {
    # status: (component name, description)
    "400": ("BadRequest", "the body is not valid JSON (invalid_json) or not understood"),
    "401": ("NotSignedIn", "no valid session cookie (not_signed_in)"),
    "403": ("Forbidden", "not allowed: wrong role (forbidden), a foreign Origin "
                         "(origin_not_allowed) or no consent (consent_required)"),
    "404": ("NotFound", "nothing with that id (not_found)"),
    "409": ("Conflict", "conflicts with the current state"),
    "413": ("TooLarge", "the body is over 64 KiB (too_large)"),
    "415": ("UnsupportedMediaType", "the body is not sent as application/json"),
    "422": ("Invalid", "a field is missing or wrong; `field` names it"),
    "429": ("RateLimited", "too many attempts; wait and try again (rate_limited)"),
}
RESPONSES: dict[str, Any] = {
    name: {"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for name, description in _ERRORS.values()
}


def _ok(schema: Schema | None = None, description: str = "done", *,
        media: str = "application/json") -> dict[str, Any]:
    return {"description": description,
            "content": {media: {"schema": schema if schema is not None else {"type": "object"}}}}


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(key: str, item: Schema, **extra: Schema) -> Schema:
    return _obj([key], **{key: {"type": "array", "items": item}}, **extra)


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{_ERRORS[str(s)][0]}"} for s in statuses}


def _body(schema: Schema, description: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def _query(name: str, schema: Schema, description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


def _path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _limit(default: int, high: int) -> dict[str, Any]:
    return _query("limit", {"type": "integer", "minimum": 0, "maximum": high,
                            "default": default}, f"at most {high}; 422 outside 0-{high}")


_OFFSET = _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0})
_STAFF_ID = _path("staff_id", {"type": "integer", "format": "int64", "minimum": 0})
_CUSTOMER_ID = _path("customer_id", {"type": "string"})
_CONVERSATION_ID = _path("conversation_id", {"type": "string"})
Security = list[dict[str, list[str]]]
PUBLIC: Security = []
VISITOR: Security = [{"chat_session": []}]
STAFF: Security = [{"chat_staff": []}]
# JSON-body routes check the Origin, the media type, the size and the JSON itself first.
_JSON_ERRORS = (400, 403, 413, 415)


def _op(summary: str, tag: str, security: Security,
        responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None, description: str = "",
        operation_id: str = "") -> Operation:
    op: Operation = {"summary": summary, "tags": [tag], "operationId": operation_id,
                     "security": security, "responses": responses}
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


def _admin(summary: str, operation_id: str, ok: dict[str, Any], *extra: int,
           body: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None,
           description: str = "", unsafe: bool = False) -> Operation:
    """An admin-only route: 401 signed out, 403 for agents."""
    statuses = {401, 403, *extra}
    if body is not None:
        statuses |= {*_JSON_ERRORS, 422}
    elif unsafe:
        statuses.add(403)
    return _op(summary, "admin", STAFF, {"200": ok, **_errors(*sorted(statuses))}, body=body,
               parameters=parameters, description=description, operation_id=operation_id)


# -- the document -------------------------------------------------------------------------------


def _customer_paths() -> dict[str, dict[str, Operation]]:
    customer = _obj(["customer"], customer=_ref("Customer"))
    me: dict[str, Schema] = {
        "customer": {"allOf": [_ref("Customer")], "nullable": True},
        "consent": {"type": "object", "nullable": True},
        "policy_version": {"type": "string"},
        "consents": {"type": "array", "items": {"type": "object"}},
        "legal_hold": {"type": "boolean"},
        "conversations": {"type": "array", "items": _obj(
            ["id", "status", "created_at", "closed_at", "last_message_at"],
            id={"type": "string"}, status={"type": "string"},
            created_at={"type": "string", "format": "date-time"},
            closed_at={"type": "string", "format": "date-time", "nullable": True},
            last_message_at={"type": "string", "format": "date-time", "nullable": True})},
    }
    return {
        "/api/policy": {"get": _op(
            "The current privacy policy", "customer", PUBLIC, {"200": _ok(_ref("Policy"))},
            operation_id="getPolicy")},
        "/api/consent": {"post": _op(
            "Consent to the current policy", "customer", [{}, *VISITOR],
            {"200": _ok(_ref("ConsentReceipt"), "recorded; without a session it sets the "
                        "chat_session and chat_consent cookies and is recorded when the "
                        "browser brings them back"),
             **_errors(*_JSON_ERRORS, 409, 422)},
            body=_body(_ref("Consent")), operation_id="consent",
            description="Records version, text hash, time, IP and user agent. 409 "
                        "policy_outdated when the version or hash is not the current one.")},
        "/api/consent/withdraw": {"post": _op(
            "Withdraw consent", "customer", VISITOR,
            {"200": _ok(_obj(["withdrawn"], withdrawn={"type": "integer"})),
             **_errors(*_JSON_ERRORS, 401)},
            body=_body({}, "ignored; send {}"), operation_id="withdrawConsent",
            description="Open chat sockets of the session close with 4403.")},
        "/api/visitor": {"post": _op(
            "The pre-chat form: create or correct the session's customer", "customer", VISITOR,
            {"200": _ok(customer), **_errors(*_JSON_ERRORS, 422)},
            body=_body(_ref("CustomerInput")), operation_id="saveVisitor",
            description="403 consent_required without consent to the current policy.")},
        "/api/session": {"get": _op(
            "Whether this browser has a visitor session; never 401", "customer", PUBLIC,
            {"200": _ok(_obj(["session"], session={"type": "boolean"},
                             open_conversation={"type": "boolean"}, **me))},
            operation_id="getSession",
            description="Without a valid chat_session cookie: {\"session\": false}. With one: "
                        "{\"session\": true}, every field of GET /api/me, and "
                        "open_conversation: whether the customer has a queued or active "
                        "conversation (the widget reconnects on a new page only then).")},
        "/api/me": {
            "get": _op("The customer's own account", "customer", VISITOR, {
                "200": _ok(_obj(list(me), **me, mail_enabled={"type": "boolean"})),
                **_errors(401)}, operation_id="getMe"),
            "patch": _op("Correct name, email or company", "customer", VISITOR,
                         {"200": _ok(customer), **_errors(*_JSON_ERRORS, 401, 404, 422)},
                         body=_body(_ref("CustomerPatch")), operation_id="patchMe",
                         description="404 no_customer when the session never gave details."),
            "delete": _op("Terminate the account and wipe its data now", "customer", VISITOR,
                          {"200": _ok(_ref("Erased"), "erased; the cookie is cleared"),
                           **_errors(401, 403, 409)}, operation_id="deleteMe",
                          description="409 legal_hold while an account is under a legal hold."),
        },
        "/api/me/export": {"get": _op(
            "Everything held about the customer", "customer", VISITOR,
            {"200": _ok({"type": "object", "description": "see docs/export.schema.json"}),
             **_errors(401)}, operation_id="exportMe")},
        **_mail_paths(),
    }


def _mail_paths() -> dict[str, dict[str, Operation]]:
    accepted = _ok(_ref("Accepted"), "accepted; any mail goes out later from the outbox")
    link_errors = _errors(*_JSON_ERRORS, 404, 422, 429)
    same = ("Always the same 202 body, after the same work and no sooner than 0.25 s after "
            "the request, whether or not the address is known; only a known address gets a "
            "mail. 404 mail_disabled when the server sends no mail; 429 after 3 links to one "
            "address in 15 minutes or 10 requests from one IP in an hour.")
    return {
        "/api/account/link": {"post": _op(
            "Mail a one-time sign-in link (15 minutes) to a known address", "customer", PUBLIC,
            {"202": accepted, **link_errors}, body=_body(_ref("AddressInput")),
            operation_id="accountLink", description=same)},
        "/api/account/terminate-link": {"post": _op(
            "Mail a one-time link to confirm the account's deletion", "customer", PUBLIC,
            {"202": accepted, **link_errors}, body=_body(_ref("AddressInput")),
            operation_id="terminateLink", description=same)},
        "/api/me/transcript-email": {"post": _op(
            "Mail one of the customer's own conversations to their own address", "customer",
            VISITOR, {"202": accepted, **_errors(*_JSON_ERRORS, 401, 404, 422, 429)},
            body=_body(_ref("TranscriptMailInput")), operation_id="transcriptEmail",
            description="Audited by conversation, never by address. 404 for a conversation that "
                        "is not the customer's, no_customer before the pre-chat form, "
                        "mail_disabled when the server sends no mail.")},
        "/api/mail": {"get": _op(
            "Whether this server sends mail", "customer", PUBLIC,
            {"200": _ok(_obj(["enabled"], enabled={"type": "boolean"}))},
            operation_id="mailEnabled")},
    }


def _staff_paths() -> dict[str, dict[str, Operation]]:
    staff = _obj(["staff"], staff=_ref("Staff"))
    return {
        "/api/staff/login": {"post": _op(
            "Sign in; sets the chat_staff and chat_staff_device cookies", "staff", PUBLIC,
            {"200": _ok(staff), **_errors(*_JSON_ERRORS, 401, 422, 429)},
            body=_body(_ref("Login")), operation_id="staffLogin",
            description="Every attempt that reaches the password check is recorded. Unknown "
                        "names, wrong passwords, disabled and throttled accounts all get 401 "
                        "invalid_credentials; past the per-address or overall attempt limits, "
                        "429 rate_limited for any name.")},
        "/api/staff/logout": {"post": _op(
            "Sign out; clears the cookie and closes the session's sockets", "staff", [{}, *STAFF],
            {"200": _ok(_obj(["ok"], ok={"type": "boolean"})), **_errors(403)},
            operation_id="staffLogout")},
        "/api/staff/me": {"get": _op(
            "The signed-in staff member", "staff", STAFF, {"200": _ok(staff), **_errors(401)},
            operation_id="staffMe"), "patch": _op(
            "Set one's own display name and away state", "staff", STAFF,
            {"200": _ok(staff), **_errors(*_JSON_ERRORS, 401, 422)},
            body=_body(_ref("ProfilePatch")), operation_id="staffProfile",
            description="Away: no transfers to this agent, who does not count as online for "
                        "customers. A new display name reaches the customers of the agent's "
                        "open conversations at once. Audited as staff.profile.")},
        "/api/staff/colleagues": {"get": _op(
            "Active staff a conversation can be handed to", "staff", STAFF,
            {"200": _ok(_list("staff", _ref("Colleague"))), **_errors(401)},
            operation_id="staffColleagues",
            description="name is what the socket's transfer frame takes.")},
    }


def _admin_paths() -> dict[str, dict[str, Operation]]:
    conversation_filters = [
        _query("status", _STATUS),
        _query("q", _Q, "kept for scripts: the console sends searches in a POST body "
                        "(/api/admin/search/conversations), out of URLs"),
        _query("email", _EMAIL_FILTER, "kept for scripts, like q"),
        _query("agent", _AGENT),
        _query("from", _DATE, "created on or after this day (UTC)"),
        _query("to", _DATE, "created on or before this day (UTC)"),
    ]
    conversations = _ok(_list("conversations", _ref("ConversationSummary"),
                              total={"type": "integer"}))
    customers = _ok(_list("customers", {"type": "object"}, total={"type": "integer"}))
    staff_item = _ref("StaffItem")
    return {
        "/api/admin/conversations": {"get": _admin(
            "List and search conversations", "listConversations", conversations,
            422, parameters=[*conversation_filters, _limit(50, 200), _OFFSET])},
        "/api/admin/search/conversations": {"post": _admin(
            "Search conversations, the filters in the body", "searchConversations",
            conversations, body=_body(_ref("ConversationSearch")),
            description="The same answer as GET /api/admin/conversations.")},
        "/api/admin/conversations/{conversation_id}": {"get": _admin(
            "One conversation with its messages (audited)", "getConversation",
            _ok(_obj(["conversation", "messages", "notes", "rating"],
                     conversation=_ref("ConversationSummary"),
                     messages={"type": "array", "items": _ref("Message")},
                     notes={"type": "array", "items": {"type": "object"},
                            "description": "staff-only notes, as the agents' note frames"},
                     rating={"type": "object", "nullable": True,
                             "description": "the customer's rating: score, comment, rated_at"})),
            404, parameters=[_CONVERSATION_ID])},
        "/api/admin/conversations/{conversation_id}/transcript": {"get": _admin(
            "A transcript download (audited)", "getTranscript",
            {"description": "the transcript as an attachment, in the format asked for",
             "content": {"text/plain": {"schema": {"type": "string"}},
                         "application/json": {"schema": {"type": "object"}},
                         "text/html": {"schema": {"type": "string"}},
                         "text/csv": {"schema": {"type": "string"}}}},
            404, 422, parameters=[_CONVERSATION_ID, _query(
                "format", {"type": "string", "enum": ["txt", "json", "html", "csv"],
                           "default": "txt"})])},
        "/api/admin/export": {"get": _admin(
            "Every message sent in a date range, streamed (audited)", "bulkExport",
            {"description": "one message frame a line (JSONL) or CSV rows",
             "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                         "text/csv": {"schema": {"type": "string"}}}},
            422, parameters=[
                _query("format", {"type": "string", "enum": ["jsonl", "csv"],
                                  "default": "jsonl"}),
                _query("from", _DATE), _query("to", _DATE)])},
        "/api/admin/policies": {
            "get": _admin("Every published policy version", "listPolicies",
                          _ok(_list("policies", _ref("PolicyVersion")))),
            "post": _admin("Publish a new policy version; it becomes the current one",
                           "publishPolicy", _ok(_obj(["policy"], policy=_ref("PolicyVersion"))),
                           409, body=_body(_ref("PolicyInput")),
                           description="409 version_exists for a version already published."),
        },
        "/api/admin/policies/current": {"get": _admin(
            "The current policy with its Markdown text, and the open chats a new one pauses",
            "currentPolicy", _ok(_obj(
                ["policy", "bundled", "open_conversations"],
                policy={"allOf": [_ref("PolicyVersion")],
                        "properties": {"text": {"type": "string"}}},
                bundled={"type": "boolean", "description": "still the bundled sample policy"},
                open_conversations={"type": "integer", "minimum": 0})))},
        "/api/admin/policies/preview": {"post": _admin(
            "Render a policy text as visitors see it; count the open chats publishing pauses",
            "previewPolicy", _ok(_obj(["html", "open_conversations"], html={"type": "string"},
                                      open_conversations={"type": "integer", "minimum": 0})),
            body=_body(_obj(["text"], text={"type": "string", "minLength": 1,
                                            "description": "Markdown; not only white space"})),
            description="Changes nothing: the console shows the result before asking to publish.")},
        "/api/admin/customers": {"get": _admin(
            "List and search customers", "listCustomers", customers,
            422, parameters=[_query("q", _words(admin_privacy.QUERY_CHARS),
                                    "kept for scripts: the console sends searches in a POST "
                                    "body (/api/admin/search/customers)"),
                             _limit(50, 200), _OFFSET])},
        "/api/admin/search/customers": {"post": _admin(
            "Search customers, the words in the body", "searchCustomers", customers,
            body=_body(_ref("CustomerSearch")),
            description="The same answer as GET /api/admin/customers.")},
        "/api/admin/customers/{customer_id}": {
            "delete": _admin(
                "Erase a customer now", "eraseCustomer", _ok(_ref("Erased")), 404, 409,
                parameters=[_CUSTOMER_ID], unsafe=True,
                description="409 legal_hold while the customer is under a legal hold."),
            "patch": _admin(
                "Correct a customer's name, email or company (audited)", "correctCustomer",
                _ok(_obj(["customer"], customer=_ref("Customer"))), 404,
                body=_body(_ref("CustomerPatch")), parameters=[_CUSTOMER_ID]),
        },
        "/api/admin/customers/{customer_id}/legal-hold": {"post": _admin(
            "Set or release a legal hold", "legalHold",
            _ok(_obj(["customer"], customer={"type": "object"})), 404,
            body=_body(_ref("LegalHold")), parameters=[_CUSTOMER_ID])},
        "/api/admin/customers/{customer_id}/access": {"get": _admin(
            "A customer's access records (audited)", "customerAccess",
            _ok(_list("access", {"type": "object"})), 404, parameters=[_CUSTOMER_ID])},
        "/api/admin/purge": {"post": _admin(
            "Apply the retention rules now, or count what they would wipe", "purge",
            _ok(_obj(["dry_run", "counts"], dry_run={"type": "boolean"},
                     counts={"type": "object", "additionalProperties": {"type": "integer"}})),
            body=_body(_ref("Purge")))},
        "/api/admin/staff": {
            "get": _admin("Staff accounts", "listStaff", _ok(_list("staff", staff_item))),
            "post": _admin("Create a staff account", "addStaff",
                           _ok(_obj(["staff"], staff=staff_item)), 409,
                           body=_body(_ref("StaffInput")),
                           description="422 weak_password for a password the policy refuses; "
                                       "409 for a name taken."),
        },
        "/api/admin/staff/{staff_id}": {"patch": _admin(
            "Change a role, or disable or enable an account", "changeStaff",
            _ok(_obj(["staff"], staff=staff_item)), 404, 409,
            body=_body(_ref("StaffPatch")), parameters=[_STAFF_ID],
            description="Disabling or a new role ends the account's sessions at once. 409 "
                        "last_admin when no active admin would be left.")},
        "/api/admin/staff/{staff_id}/password": {"post": _admin(
            "Set a new password; ends the account's sessions", "resetPassword",
            _ok(_obj(["ok", "sessions_ended"], ok={"type": "boolean"},
                     sessions_ended={"type": "integer"})),
            404, body=_body(_ref("PasswordInput")), parameters=[_STAFF_ID])},
        "/api/admin/staff/{staff_id}/logout": {"post": _admin(
            "End every session of a staff member", "forceLogout",
            _ok(_obj(["sessions_ended"], sessions_ended={"type": "integer"})),
            404, parameters=[_STAFF_ID], unsafe=True)},
        "/api/admin/staff/{staff_id}/logins": {"get": _admin(
            "A staff member's sign-in history", "loginHistory",
            _ok(_list("logins", {"type": "object"})), 404, 422,
            parameters=[_STAFF_ID, _limit(100, 1000)])},
        "/api/admin/audit": {"get": _admin(
            "The audit log, newest first", "auditLog",
            _ok(_list("entries", _ref("AuditEntry"))), 422, parameters=[
                _limit(100, 1000), _OFFSET,
                _query("actor", _words(admin_staff.AUDIT_FILTER_CHARS), "e.g. staff:1, customer, anonymous"),
                _query("action", _words(admin_staff.AUDIT_FILTER_CHARS), "e.g. transcript.download"),
                _query("target", _words(admin_staff.AUDIT_FILTER_CHARS), "e.g. conversation:cv_..."),
                _query("since", _MOMENT, "entries at or after this day or time"),
                _query("before", _MOMENT, "entries before this day or time")])},
        "/api/admin/mail": {"get": _admin(
            "The mail outbox, newest first (no addresses, no content)", "mailOutbox",
            _ok(_list("mails", _ref("OutboxMail"), enabled={"type": "boolean"},
                      total={"type": "integer"})),
            422, parameters=[_limit(100, 500), _OFFSET])},
        "/api/admin/audit/verify": {"get": _admin(
            "Check the audit log's hash chain", "auditVerify",
            _ok(_obj(["intact", "first_broken_id", "problem", "entries", "first_id", "last_id",
                      "checked", "cannot_prove"],
                     intact={"type": "boolean"},
                     first_broken_id={"type": "integer", "nullable": True},
                     problem={"type": "string", "nullable": True},
                     entries={"type": "integer"},
                     first_id={"type": "integer", "nullable": True},
                     last_id={"type": "integer", "nullable": True},
                     checked={"type": "array", "items": {"type": "string"}},
                     cannot_prove={"type": "array", "items": {"type": "string"}})))},
    }


def _team_paths() -> dict[str, dict[str, Operation]]:
    """Issue 12: customer history for the handling agent; canned responses, which admins
    manage and every staff member reads."""
    item = _obj(["id", "shortcut", "body", "created_at", "updated_at"],
                id={"type": "integer"}, shortcut={"type": "string"}, body={"type": "string"},
                created_at={"type": "string"}, updated_at={"type": "string"})
    listing = _ok(_list("canned", item))
    one = _ok(_obj(["canned"], canned=item))
    canned_id = _path("canned_id", {"type": "integer", "format": "int64", "minimum": 0})
    shortcut = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$",
                "description": "stored lower-cased; 409 shortcut_taken when in use"}
    text = {"type": "string", "minLength": 1, "maxLength": 4000,
            "description": "placeholders {customer_first_name} and {agent_name}; any other "
                           "{word} gets 422 unknown_placeholder"}
    day = {"type": "string", "format": "date"}
    report_range = [
        _query("from", day, "first day (UTC), included; default: 29 days before `to`"),
        _query("to", day, f"last day (UTC), included; default: today; at most "
                          f"{reports.MAX_DAYS} days in all")]
    history_item = _obj(["id", "status", "created_at", "closed_at", "agent", "message_count",
                         "rating"],
                        id={"type": "string"}, status={"type": "string"},
                        created_at={"type": "string"},
                        closed_at={"type": "string", "nullable": True},
                        agent={"type": "string", "nullable": True},
                        message_count={"type": "integer"},
                        rating={"type": "integer", "nullable": True})
    return {
        "/api/agent/conversations/{conversation_id}/history": {"get": _op(
            "The customer's other conversations, for the agent handling this one", "staff",
            STAFF, {"200": _ok(_list("conversations", history_item)), **_errors(401, 403, 404)},
            parameters=[_CONVERSATION_ID], operation_id="customerHistory",
            description="No message text. 403 for anyone but the agent handling the "
                        "conversation (admins: any).")},
        "/api/agent/conversations/{conversation_id}/history/{earlier_id}": {"get": _op(
            "One earlier conversation of the customer, read-only (audited)", "staff", STAFF,
            {"200": _ok(_obj(["conversation", "messages", "notes", "rating"],
                             conversation={"type": "object"},
                             messages={"type": "array", "items": _ref("Message")},
                             notes={"type": "array", "items": {"type": "object"}},
                             rating={"type": "object", "nullable": True})),
             **_errors(401, 403, 404)},
            parameters=[_CONVERSATION_ID, _path("earlier_id", {"type": "string"})],
            operation_id="customerHistoryTranscript",
            description="Written to the audit log (transcript.view, via history) before it "
                        "is read. 404 unless it is another conversation of the same customer.")},
        "/api/admin/reports": {"get": _admin(
            "Reports: conversations per day, time to first reply, length, ratings, per agent",
            "reports", _ok(_obj(["from", "to", "conversations", "first_reply", "length",
                                 "ratings", "per_day", "per_agent"],
                                **{"from": {"type": "string"}, "to": {"type": "string"}},
                                conversations={"type": "integer"},
                                first_reply={"type": "object"}, length={"type": "object"},
                                ratings={"type": "object"},
                                per_day={"type": "array", "items": {"type": "object"}},
                                per_agent={"type": "array", "items": {"type": "object"}})),
            422, parameters=report_range)},
        "/api/admin/reports/csv": {"get": _admin(
            "The report's figures as CSV", "reportsCsv",
            _ok({"type": "string"}, "section, key, metric, value", media="text/csv"),
            422, parameters=report_range)},
        "/api/admin/reports/charts/{kind}": {"get": _admin(
            "One of the report's charts, drawn as SVG on the server", "reportsChart",
            _ok({"type": "string"}, "an SVG image", media="image/svg+xml"), 404, 422,
            parameters=[_path("kind", {"type": "string", "enum": list(reports.CHARTS)}),
                        *report_range])},
        "/api/agent/conversations/{conversation_id}/block": {"post": _op(
            "Block this conversation's visitor (and optionally their IP address) for a while",
            "staff", STAFF,
            {"200": _ok(_obj(["block"], block=_obj(
                ["id", "expires_at", "ip_blocked"], id={"type": "integer"},
                expires_at={"type": "string"}, ip_blocked={"type": "boolean"}))),
             **_errors(*_JSON_ERRORS, 401, 404, 422)},
            body=_body({"type": "object", "required": ["reason"], "additionalProperties": False,
                        "properties": {
                            "reason": {"type": "string", "minLength": 1, "maxLength": 500,
                                       "pattern": "\\S"},
                            "block_ip": {"type": "boolean", "default": False},
                            "hours": {"type": "integer", "minimum": 1, "maximum": 720,
                                      "default": 24}}}),
            parameters=[_CONVERSATION_ID], operation_id="blockVisitor",
            description="Only the agent handling the conversation, or an admin (else 403). "
                        "Closes the conversation and the visitor's sockets (4423); audited "
                        "without the reason or the address.")},
        "/api/agent/canned": {"get": _op(
            "Canned responses, for the dashboard's / shortcuts", "staff", STAFF,
            {"200": listing, **_errors(401)}, operation_id="cannedForStaff")},
        "/api/admin/canned": {
            "get": _admin("Canned responses", "listCanned", listing),
            "post": _admin(
                "Add a canned response (audited)", "addCanned", one, 409,
                body=_body({"type": "object", "required": ["shortcut", "body"],
                            "additionalProperties": False,
                            "properties": {"shortcut": shortcut, "body": text}})),
        },
        "/api/admin/canned/{canned_id}": {
            "patch": _admin(
                "Change a canned response (audited)", "changeCanned", one, 404, 409,
                body=_body({"type": "object", "minProperties": 1, "additionalProperties": False,
                            "properties": {"shortcut": shortcut, "body": text}}),
                parameters=[canned_id]),
            "delete": _admin(
                "Delete a canned response (audited)", "deleteCanned",
                _ok(_obj(["deleted"], deleted={"type": "integer"})), 404,
                parameters=[canned_id], unsafe=True),
        },
    }


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Operation]] = {
        **_customer_paths(),
        **_staff_paths(),
        **_admin_paths(),
        **_team_paths(),
        "/api/openapi.json": {"get": _op(
            "This document", "meta", PUBLIC, {"200": _ok({"type": "object"})},
            operation_id="openapi")},
        "/metrics": {"get": _op(
            "Prometheus metrics, for CHATSERVER_METRICS_ALLOW only", "meta", PUBLIC,
            {"200": _ok({"type": "string"}, "Prometheus' text format, summed over all the "
                        "server's processes", media="text/plain"),
             **_errors(404)},
            operation_id="metrics",
            description="Open sockets by kind, messages stored, ack and commit latency, "
                        "broadcast lag and reconnects, queue length, rate-limit refusals and "
                        "purge runs; labels hold fixed words only, never PII or an id. A client "
                        "whose address is not in CHATSERVER_METRICS_ALLOW (default loopback), or "
                        "a request relayed by a proxy not in CHATSERVER_TRUSTED_PROXIES, gets "
                        "the 404 of a path that does not exist.")},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "chatserver",
            "version": __version__,
            "description": "The JSON routes of the chat server. Bodies are JSON sent as "
                           "application/json and at most 64 KiB. A browser request from a "
                           "foreign Origin is refused with 403; clients that send no Origin are "
                           "judged by their cookies alone. A request naming a Host the server "
                           "does not answer for (CHATSERVER_ALLOWED_HOSTS) gets 400 "
                           "host_not_allowed. Errors are "
                           "{\"error\", \"message\", \"field\"?}.",
        },
        "tags": [{"name": "customer"}, {"name": "staff"}, {"name": "admin"},
                 {"name": "meta"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "chat_session": {
                    "type": "apiKey", "in": "cookie", "name": "chat_session",
                    "description": "The visitor's signed random session id, set by POST "
                                   "/api/consent.",
                },
                "chat_staff": {
                    "type": "apiKey", "in": "cookie", "name": "chat_staff",
                    "description": "The staff member's signed random session id, set by POST "
                                   "/api/staff/login (named __Host-chat_staff under HTTPS).",
                },
            },
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


routes = [Route("/api/openapi.json", openapi)]
