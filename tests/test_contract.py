"""The machine-readable contract: valid documents that say what the code does.

The documents live in the package (``trio_events/contract``, served at
``/api/v1/docs/...``) with byte-identical copies in ``docs/``.  Besides the
checks here, the autouse hook in ``conftest.py`` validates every REST
response and every stream frame of the whole suite against them.
"""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

import trio_events
from trio_events import model
from trio_events.api import create_app
from trio_events.api.docs import DOCUMENTS, document
from trio_events.broker import CloseCode
from trio_events.services.access import ALIASES

from .contract_helpers import OPENAPI_URI, Contract
from .helpers import login_admin

ROOT = Path(__file__).resolve().parent.parent
Json = dict[str, Any]


def _walk_schemas(node: object) -> list[Json]:
    """Every schema object under ``components.schemas`` style mappings."""
    return list(node.values()) if isinstance(node, dict) else []


# the documents themselves


@pytest.mark.parametrize("name", DOCUMENTS)
def test_docs_copies_are_the_packaged_documents(name: str) -> None:
    assert (ROOT / "docs" / name).read_bytes() == document(name), (
        f"docs/{name} differs from trio_events/contract/{name}: copy the packaged file over it"
    )


def test_openapi_document_is_valid_openapi_3_1(contract: Contract) -> None:
    assert contract.openapi["openapi"].startswith("3.1.")
    validate_openapi(contract.openapi, base_uri=OPENAPI_URI)


def test_versions_are_the_package_version(contract: Contract) -> None:
    assert contract.openapi["info"]["version"] == trio_events.__version__
    assert contract.asyncapi["info"]["version"] == trio_events.__version__


def test_every_schema_is_valid_json_schema(contract: Contract) -> None:
    """Component schemas and payloads: valid 2020-12, and valid draft-07 too
    (AsyncAPI's default schema format is a draft-07 superset)."""
    schemas = [
        *_walk_schemas(contract.openapi["components"]["schemas"]),
        *_walk_schemas(contract.asyncapi["components"]["schemas"]),
    ]
    schemas += [m["payload"] for m in contract.asyncapi["components"]["messages"].values()]
    assert len(schemas) > 40
    for schema in schemas:
        Draft202012Validator.check_schema(schema)
        Draft7Validator.check_schema(schema)


def test_strict_object_schemas(contract: Contract) -> None:
    """Objects we define fully forbid extra properties and list what is required."""
    loose = {"LoginRequest", "PingFrame"}  # requests the server reads leniently

    def visit(name: str, schema: object) -> None:
        if isinstance(schema, list):
            for item in schema:
                visit(name, item)
        if not isinstance(schema, dict):
            return
        if schema.get("type") == "object" and "properties" in schema and name not in loose:
            assert schema.get("additionalProperties") is False, (name, schema)
        for value in schema.values():
            visit(name, value)

    for document_ in (contract.openapi, contract.asyncapi):
        for name, schema in document_["components"]["schemas"].items():
            visit(name, schema)


def test_asyncapi_document_structure(contract: Contract) -> None:
    doc = contract.asyncapi
    assert doc["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= set(doc["info"])
    assert doc["defaultContentType"] == "application/json"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["cookieAuth"] == {
        "type": "httpApiKey",
        "name": "VirolaUserSessionId",
        "in": "cookie",
        "description": schemes["cookieAuth"]["description"],
    }
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    for server in doc["servers"].values():
        assert server["protocol"] in {"ws", "wss"}
        for ref in server["security"]:
            contract.asyncapi_object(ref["$ref"])  # resolves
    (channel,) = doc["channels"].values()
    assert channel["address"] == "/api/v1/events"
    query = channel["bindings"]["ws"]["query"]
    assert query["properties"]["since"] == {**query["properties"]["since"], "type": "integer"}
    # every channel message is a component message whose name is its key
    for key, ref in channel["messages"].items():
        message = contract.asyncapi_object(ref["$ref"])
        assert message["name"] == key
        assert "$ref" in message["payload"] or message["payload"].get("type") == "object"
    # operations point at this channel and at its messages only
    channel_refs = {f"#/channels/events/messages/{key}" for key in channel["messages"]}
    actions = {}
    for name, operation in doc["operations"].items():
        assert operation["channel"] == {"$ref": "#/channels/events"}, name
        refs = [m["$ref"] for m in operation["messages"]]
        refs += [m["$ref"] for m in operation.get("reply", {}).get("messages", [])]
        assert set(refs) <= channel_refs, name
        actions[name] = operation["action"]
    assert sorted(actions.values()) == ["receive", "send"]
    wanted = {
        "Hello",
        "TextMessagesCreated",
        "TextMessagesUpdated",
        "TextMessageDeleted",
        "RoomCreated",
        "RoomUpdated",
        "RoomDeleted",
        "ResyncRequired",
        "Pong",
    }
    assert wanted <= set(contract.server_messages)
    assert "Ping" not in contract.server_messages  # client to server only


def test_close_codes_are_the_servers(contract: Contract) -> None:
    codes = {int(code) for code in contract.asyncapi["x-close-codes"]}
    ours = {value for name, value in vars(CloseCode).items() if name.isupper()}
    assert codes == ours
    for code in ours:
        assert str(code) in contract.asyncapi["info"]["description"]


@pytest.mark.parametrize(
    ("schema", "enum_type"),
    [
        ("UserStatus", model.UserStatus),
        ("RoomType", model.RoomType),
        ("MarkupType", model.MarkupType),
        ("MessageType", model.MessageType),
        ("Priority", model.Priority),
        ("IssueType", model.IssueType),
        ("IssueStatus", model.IssueStatus),
    ],
)
def test_enums_are_the_models(
    contract: Contract, schema: str, enum_type: type[enum.StrEnum]
) -> None:
    assert contract.openapi["components"]["schemas"][schema]["enum"] == [
        member.value for member in enum_type
    ]


def test_permission_flags_are_the_servers(contract: Contract) -> None:
    flags = contract.openapi["components"]["schemas"]["RoomPermissions"]["properties"]
    required = flags["permissions"]["required"]
    assert len(required) == 24 + len(ALIASES)
    assert set(required) == set(flags["permissions"]["properties"])
    assert set(ALIASES) | set(ALIASES.values()) <= set(required)


async def test_every_route_is_documented_and_every_operation_exists(
    contract: Contract, server: trio_events.RunningServer
) -> None:
    app = create_app(server.services)
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule
        if not (path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics")):
            continue
        for name in ("int:", "path:", ""):
            path = path.replace(f"<{name}", "<")
        template = path.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                served.add((template, method.lower()))
    documented: set[tuple[str, str]] = set()
    for route in contract.routes:
        documented |= {(route.template, method) for method in route.operations()}
    # the docs route serves its two documents by name
    served.discard(("/api/v1/docs/{name}", "get"))
    documented -= {(f"/api/v1/docs/{name}", "get") for name in DOCUMENTS}

    def canonical(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(re.sub(r"\{[^}]+\}", "{}", t), m) for t, m in pairs}

    assert canonical(served) == canonical(documented)


# serving


@pytest.mark.parametrize("name", DOCUMENTS)
async def test_documents_are_served_without_credentials(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/api/v1/docs/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.content == document(name)


async def test_unknown_document_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/docs/nope.yaml")
    assert response.status_code == 404
    assert response.json()["httpStatusCode"] == 404


# the checker itself: it must catch drift


def _response(method: str, path: str, status: int, body: object, **headers: str) -> httpx.Response:
    request = httpx.Request(method, "http://test" + path)
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json; charset=utf-8", **headers},
        request=request,
    )


def test_checker_accepts_a_conforming_response(contract: Contract) -> None:
    ok = _response("GET", "/api/v1/rooms", 200, {"rooms": [], "httpStatusCode": 200})
    assert contract.check_response(ok) == []
    missing = _response("GET", "/api/v1/rooms/abc", 404, {"errorText": "x", "httpStatusCode": 404})
    assert contract.check_response(missing) == []
    assert contract.check_response(_response("GET", "/", 200, "anything")) == []


@pytest.mark.parametrize(
    ("response", "complaint"),
    [
        (
            _response(
                "GET", "/api/v1/rooms", 200, {"rooms": [], "extra": 1, "httpStatusCode": 200}
            ),
            "Additional properties",
        ),
        (_response("GET", "/api/v1/rooms", 200, {"rooms": []}), "'httpStatusCode' is a required"),
        (
            _response("GET", "/api/v1/rooms", 418, {"errorText": "x", "httpStatusCode": 418}),
            "status 418 is not documented",
        ),
        (_response("GET", "/api/v1/nowhere", 200, {"httpStatusCode": 200}), "no path"),
        (
            _response("PUT", "/api/v1/status", 200, {"httpStatusCode": 200}),
            "documents no PUT",
        ),
        (
            _response("DELETE", "/api/v1/rooms", 405, {"errorText": "x", "httpStatusCode": 405}),
            "Allow is missing",
        ),
        (
            _response("GET", "/api/v1/rooms/1", 404, {"errorText": "x", "httpStatusCode": 400}),
            "404 was expected",
        ),
        (
            _response("POST", "/api/v1/login", 429, {"errorText": "x", "httpStatusCode": 429}),
            "Retry-After is missing",
        ),
    ],
)
def test_checker_catches_drift(
    contract: Contract, response: httpx.Response, complaint: str
) -> None:
    problems = contract.check_response(response)
    assert any(complaint in problem for problem in problems), problems


def test_checker_checks_frames(contract: Contract) -> None:
    hello = {"userId": 1, "heartbeatInterval": 20.0, "eventId": 0, "resumed": False, "replayed": 0}
    good = [
        {"type": "Hello", "data": hello},
        {"type": "RoomDeleted", "data": {"roomId": 3}, "eventId": 9},
        {"type": "ResyncRequired", "data": {"oldestEventId": 5}},
        {"type": "Pong", "data": [1, "x"]},
        {"type": "BuildFinished", "data": {"build": 7}, "eventId": 10},
    ]
    for frame in good:
        assert contract.check_frame(json.dumps(frame)) == [], frame
    bad = [
        {"type": "Hello", "data": {**hello, "extra": 1}},
        {"type": "RoomDeleted", "data": {"roomId": 3}},
        {"type": "TextMessagesCreated", "data": {"messages": []}, "eventId": 9},
        {"type": "Ping", "data": 1},  # the server never sends one
        {"type": "Build.Finished", "data": {}, "eventId": 10},
    ]
    for frame in bad:
        assert contract.check_frame(json.dumps(frame)) != [], frame
    assert contract.check_frame("not json") == []


async def test_the_hook_sees_the_suites_traffic(
    contract: Contract, client: httpx.AsyncClient
) -> None:
    before = contract.checked["responses"]
    await client.get("/api/v1/rooms", headers=await login_admin(client))
    assert contract.checked["responses"] >= before + 2  # the login and the rooms
