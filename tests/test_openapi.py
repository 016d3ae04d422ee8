"""The OpenAPI document: it names every /api route of the app, it is valid OpenAPI 3.0, and
schemathesis, generating requests from it, gets no 5xx from a running server.

The schemathesis run uses a server of its own: it publishes policies, creates staff, erases
customers and signs sessions out, which other tests must not see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from starlette.routing import Route

from chatserver.app import create_app
from chatserver.openapi import document
from chatserver.settings import load

from .fuzzing import LogWatch
from .support import STAFF_PASSWORD, Server

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOC = document()
DOCUMENTED = sorted((method.upper(), path) for path, item in DOC["paths"].items()
                    for method in item if method in METHODS)


# Routes outside /api/ that the document describes too.
DOCUMENTED_ELSEWHERE = {"/metrics"}


def _api_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every /api route in the app's route table (and the few outside it that
    the document describes); HEAD is implied by GET."""
    app = create_app(load({"data_dir": str(tmp_path / "routes")}))
    return {(method, route.path) for route in app.routes
            if isinstance(route, Route)
            and (route.path.startswith("/api/") or route.path in DOCUMENTED_ELSEWHERE)
            for method in (route.methods or {"GET"}) if method != "HEAD"}


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def _resolve(value: dict[str, Any]) -> dict[str, Any]:
    ref = value.get("$ref")
    if not ref:
        return value
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


# -- the document -------------------------------------------------------------------------------


def test_every_api_route_is_documented(tmp_path: Path) -> None:
    """Each /api route and method of the route table has an operation, so a new route fails."""
    missing = _api_routes(tmp_path) - set(DOCUMENTED)
    assert not missing, f"add these to chatserver/openapi.py: {sorted(missing)}"


def test_every_documented_operation_exists(tmp_path: Path) -> None:
    """The document describes no route or method the app does not serve."""
    assert set(DOCUMENTED) <= _api_routes(tmp_path)


def test_document_is_valid_openapi() -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.0.3."""
    validator = pytest.importorskip("openapi_spec_validator")
    assert DOC["openapi"] == "3.0.3"
    validator.validate(DOC)


def test_document_structure() -> None:
    """Path params match templates, errors use the Error schema, bodies and roles list theirs."""
    schemes = DOC["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {
        ("cookie", "chat_session"), ("cookie", "chat_staff")}
    ids = [op["operationId"] for _, _, op in _operations()]
    assert len(ids) == len(set(ids)) and all(ids)
    for method, path, op in _operations():
        where = f"{method} {path}"
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), where
        assert {"200", "202"} & set(op["responses"]), where
        for status, response in op["responses"].items():
            if status.startswith("4"):
                schema = _resolve(response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, where
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), where
        if "requestBody" in op:
            assert "application/json" in op["requestBody"]["content"], where
            assert {"400", "413", "415"} <= set(op["responses"]), where
        if method in {"POST", "PATCH", "DELETE"}:
            assert "403" in op["responses"], f"{where}: a foreign Origin gets 403"
        if path.startswith("/api/admin/"):
            assert {"401", "403"} <= set(op["responses"]), where
            assert op["security"] == [{"chat_staff": []}], where
    error = DOC["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    assert set(error["properties"]) == {"error", "message", "field"}


def test_served_document_is_the_module_document(server: Server) -> None:
    """GET /api/openapi.json serves document(), as JSON."""
    response = httpx.get(server.url + "/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == DOC


_SAMPLE_PARAMS = {"staff_id": "1", "customer_id": "cu_none", "conversation_id": "cv_none",
                  "canned_id": "1", "earlier_id": "cv_none",
                  "kind": "per_day"}


def test_405_names_every_method_of_the_path(server: Server) -> None:
    """A method a documented path does not serve gets 405, with an Allow header naming every
    method it does serve (HEAD with GET), even when they live in separate routes."""
    checked = 0
    for path, item in DOC["paths"].items():
        documented = {m.upper() for m in item if m in METHODS}
        expected = documented | ({"HEAD"} if "GET" in documented else set())
        url = server.url + path.format(**_SAMPLE_PARAMS)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented):
            response = httpx.request(method, url)
            assert response.status_code == 405, (method, path, response.status_code)
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == expected, (method, path, allow)
            assert response.json()["error"] == "method_not_allowed"
            checked += 1
    assert checked > 50


# -- schemathesis -------------------------------------------------------------------------------

POSITIVE_EXAMPLES = 15
# No 5xx; the answer is one the document lists, of the documented media type and shape; input
# the document forbids is refused (the validation and the document agree); and a method the
# path does not serve gets 405 with an Allow header naming every method it does.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection, unsupported_method,
          allow_header_conformance]

NEGATIVE_EXAMPLES = 10
# Successful calls that end the admin's own session: sign in again after them.
ENDS_ADMIN_SESSION = {("POST", "/api/staff/logout"), ("POST", "/api/admin/staff/{staff_id}/logout")}
# Calls that could lock the admin out for good (a new password, a lost role) when aimed at the
# admin's own account; aimed at any other id they run.
LOCKS_ADMIN_OUT = {("PATCH", "/api/admin/staff/{staff_id}"),
                   ("POST", "/api/admin/staff/{staff_id}/password")}
# Successful calls after which the customer must consent and register again.
ENDS_CUSTOMER = {("DELETE", "/api/me"), ("POST", "/api/consent/withdraw")}


@dataclass
class Target:
    """The dedicated server, its schema as schemathesis loaded it, and who is signed in."""

    server: Server
    schema: Any
    log: LogWatch
    admin_id: int = 0
    admin_cookie: str = ""
    customer_cookie: str = ""

    def sign_in_admin(self) -> None:
        response = httpx.post(self.server.url + "/api/staff/login",
                              json={"username": "admin", "password": STAFF_PASSWORD})
        assert response.status_code == 200, response.text
        self.admin_id = response.json()["staff"]["id"]
        self.admin_cookie = response.cookies["chat_staff"]

    def new_customer(self) -> None:
        with httpx.Client(base_url=self.server.url) as client:
            version = client.get("/api/policy").json()["version"]
            assert client.post("/api/consent", json={"policy_version": version}).status_code == 200
            response = client.post("/api/visitor", json={"name": "Fuzz Customer",
                                                         "email": "fuzz@example.com"})
            assert response.status_code == 200, response.text
            self.customer_cookie = client.cookies["chat_session"]

    def cookies(self, identity: str) -> dict[str, str]:
        if identity == "admin":
            return {"chat_staff": self.admin_cookie}
        if identity == "customer":
            return {"chat_session": self.customer_cookie}
        return {}

    def after(self, identity: str, method: str, path: str, status: int) -> None:
        """Restore the identity when the call just made ended it."""
        if status != 200:
            return
        if identity == "admin" and (method, path) in ENDS_ADMIN_SESSION:
            self.sign_in_admin()
        if identity == "customer" and (method, path) in ENDS_CUSTOMER:
            self.new_customer()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server of this module's own (as make_server starts one), with an admin and a customer."""
    srv = Server(tmp_path_factory.mktemp("openapi") / "data",
                 env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"})
    srv.start()
    try:
        srv.add_staff("admin", "admin")
        srv.add_staff("agent", "agent")
        schema = schemathesis.openapi.from_dict(_without_security(
            httpx.get(srv.url + "/api/openapi.json").json()))
        found = Target(srv, schema, LogWatch(srv))
        found.sign_in_admin()
        found.new_customer()
        yield found
    finally:
        srv.stop()


def _without_security(doc: dict[str, Any]) -> dict[str, Any]:
    """The served document with no security requirements, for generating requests only.

    The run sends its own session cookies (Target.cookies); left in, the cookie schemes would
    be generated and mutated too, and a request whose only fault was a mangled cookie it never
    sent would count as invalid input the server wrongly accepted."""
    for item in doc["paths"].values():
        for method, op in item.items():
            if method in METHODS:
                op.pop("security", None)
    doc["components"].pop("securitySchemes", None)
    return doc


def _cases() -> list[Any]:
    params = []
    for method, path, op in _operations():
        for identity in ("anonymous", "customer", "admin"):
            if identity == "customer" and op["tags"] != ["customer"]:
                continue  # a customer's cookie changes nothing on staff routes
            params.append(pytest.param(identity, method, path, id=f"{identity}-{method}-{path}"))
    return params


@pytest.mark.parametrize(("identity", "method", "path"), _cases())
def test_schemathesis_finds_no_server_error(target: Target, identity: str, method: str,
                                            path: str) -> None:
    """Generated requests get no 5xx, crash no handler, and get only documented answers."""
    operation = target.schema[path][method]
    has_input = any(k in DOC["paths"][path][method.lower()] for k in ("parameters",
                                                                      "requestBody"))
    modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
    if has_input:
        modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
    for mode, examples in modes:

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            if identity == "admin" and (method, path) in LOCKS_ADMIN_OUT:
                assume(str((case.path_parameters or {}).get("staff_id")) != str(target.admin_id))
            # Cookies, not a Cookie header: schemathesis fills the cookie security schemes with
            # generated values, which would replace a header; passed cookies win over them.
            response = case.call(base_url=target.server.url, cookies=target.cookies(identity),
                                 timeout=30)
            target.after(identity, method, path, response.status_code)
            if (identity, (path.split("/") + [""])[2]) in {("admin", "admin"),
                                                             ("customer", "me")}:
                assert response.status_code != 401, "the fuzzing lost its session"
            problems = target.log.new_problems()
            assert problems == [], problems
            case.validate_response(response, checks=CHECKS)

        try:
            call()
        except Unsatisfiable:
            # Nothing in this operation's input can break its schema (a free-text path id, a
            # body that may be anything): there is no invalid request to generate.
            if mode is not GenerationMode.NEGATIVE:
                raise
