"""The machine-readable contract as a checker for real traffic.

:class:`Contract` loads ``openapi.yaml`` and ``events.asyncapi.yaml`` from the
package (the files ``/api/v1/docs/...`` serves) and checks

- an HTTP response against the operation its request matches (path template,
  method, status, media type, required headers, JSON schema), and
- a server frame of the event stream against the AsyncAPI message of its
  ``type`` (any other type must be an ``ApplicationEvent``).

Validators are compiled once per schema and kept, so the autouse hook in
``conftest.py`` costs little per response.  Both documents are registered
under the URLs they are served at, so the AsyncAPI document's relative
``openapi.yaml#/...`` references resolve exactly as they do for a client.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from trio_events.api.docs import document

Json = dict[str, Any]

BASE_URI = "http://trio-events.invalid/api/v1/docs/"
OPENAPI_URI = BASE_URI + "openapi.yaml"
ASYNCAPI_URI = BASE_URI + "events.asyncapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Paths the contract covers even when a template does not match them: an
# unknown path here must be answered with the documented 404.
API_PREFIX = "/api/"


def load(name: str) -> Json:
    data = yaml.safe_load(document(name))
    assert isinstance(data, dict)
    return data


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _media_matches(pattern: str, actual: str) -> bool:
    if pattern == "*/*" or pattern == actual:
        return True
    if pattern.endswith("/*"):
        return actual.startswith(pattern[:-1])
    return False


class Route:
    """One path of the OpenAPI document, as a regular expression."""

    def __init__(self, contract: Contract, template: str, item: Json) -> None:
        self.template = template
        self.item = item
        types: dict[str, str] = {}
        parameters = list(item.get("parameters", []))
        for method in METHODS:
            if method in item:
                parameters += item[method].get("parameters", [])
        for raw in parameters:
            parameter = contract.resolve(raw)
            if parameter["in"] == "path":
                schema = contract.resolve(parameter.get("schema", {}))
                types[parameter["name"]] = schema.get("type", "string")
        pattern = ""
        for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", template):
            pattern += re.escape(literal)
            if name:
                pattern += "[0-9]+" if types.get(name) == "integer" else "[^/]+"
        self.regex = re.compile(pattern + r"\Z")
        self.params = template.count("{")

    def operations(self) -> dict[str, Json]:
        return {m: self.item[m] for m in METHODS if m in self.item}


class Contract:
    def __init__(self, openapi: Json, asyncapi: Json) -> None:
        self.openapi = openapi
        self.asyncapi = asyncapi
        self.registry: Registry[Any] = Registry().with_resources(
            [
                (OPENAPI_URI, DRAFT202012.create_resource(openapi)),
                (ASYNCAPI_URI, DRAFT202012.create_resource(asyncapi)),
            ]
        )
        self._validators: dict[str, Draft202012Validator] = {}
        routes = [Route(self, t, item) for t, item in openapi["paths"].items()]
        self.routes = sorted(routes, key=lambda r: r.params)  # literal paths win
        self.server_messages = self._server_messages()
        self.checked: Counter[str] = Counter()  # what the hook saw, for the session summary
        self.seconds = 0.0  # and how long checking it took

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    # the documents

    def resolve(self, value: Json) -> Json:
        """``value`` with local ``$ref``s of the OpenAPI document followed."""
        while "$ref" in value:
            ref = value["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.openapi
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            value = target
        return value

    def _ref_location(self, value: Json, location: str) -> tuple[Json, str]:
        """Follow a local ``$ref`` (OpenAPI objects) and say where it led."""
        while "$ref" in value:
            location = value["$ref"]
            value = self.resolve({"$ref": location})
        return value, location

    def _server_messages(self) -> dict[str, str]:
        """Frame type -> schema URI of every message the server sends."""
        messages: dict[str, str] = {}
        for operation in self.asyncapi["operations"].values():
            refs = operation["messages"] if operation["action"] == "send" else []
            refs = [*refs, *operation.get("reply", {}).get("messages", [])]
            for ref in refs:
                message = self.asyncapi_object(ref["$ref"])
                messages[message["name"]] = self.payload_uri(message["name"])
        return messages

    def asyncapi_object(self, ref: str) -> Json:
        """A message by a ``#/channels/...`` or ``#/components/...`` reference."""
        target: Any = self.asyncapi
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        while "$ref" in target:
            target = self.asyncapi_object(target["$ref"])
        assert isinstance(target, dict)
        return target

    def payload_uri(self, message_name: str) -> str:
        return ASYNCAPI_URI + "#/" + _pointer("components", "messages", message_name, "payload")

    def validator(self, uri: str) -> Draft202012Validator:
        """The (cached) validator of the schema at ``uri``."""
        found = self._validators.get(uri)
        if found is None:
            found = Draft202012Validator({"$ref": uri}, registry=self.registry)
            self._validators[uri] = found
        return found

    def errors(self, uri: str, instance: object) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(self.validator(uri).iter_errors(instance), key=str)
        ][:5]

    # HTTP

    def route_for(self, path: str) -> Route | None:
        for route in self.routes:
            if route.regex.match(path):
                return route
        return None

    def covers(self, path: str) -> bool:
        return path.startswith(API_PREFIX) or self.route_for(path) is not None

    def check_response(self, response: httpx.Response, *, body_read: bool = True) -> list[str]:
        """Every way ``response`` departs from the document (empty if it conforms)."""
        request = response.request
        path = request.url.path
        if not self.covers(path):
            return []
        self.checked["responses"] += 1
        where = f"{request.method} {path} -> {response.status_code}"
        method = request.method.lower()
        status = str(response.status_code)
        route = self.route_for(path)
        if route is None:
            fallback = self.openapi["x-unknown-route-responses"].get("404")
            if status != "404" or fallback is None:
                return [f"{where}: no path of the OpenAPI document matches {path!r}"]
            response_object, location = self._ref_location(fallback, "")
        else:
            operations = route.operations()
            if method == "head" and "get" in operations:
                method, body_read = "get", False
            if method not in operations:
                fallback = self.openapi["x-unknown-route-responses"].get("405")
                if status != "405" or fallback is None:
                    return [f"{where}: {route.template} documents no {method.upper()}"]
                response_object, location = self._ref_location(fallback, "")
            else:
                responses = operations[method]["responses"]
                if status not in responses:
                    return [
                        f"{where}: status {status} is not documented for"
                        f" {method.upper()} {route.template} (documented: {', '.join(responses)})"
                    ]
                location = "#/" + _pointer("paths", route.template, method, "responses", status)
                response_object, location = self._ref_location(responses[status], location)
        return [
            f"{where}: {problem}"
            for problem in self._check(response, response_object, location, body_read)
        ]

    def _check(
        self, response: httpx.Response, documented: Json, location: str, body_read: bool
    ) -> Iterator[str]:
        for name, header in documented.get("headers", {}).items():
            if header.get("required") and name not in response.headers:
                yield f"the required header {name} is missing"
        content: Mapping[str, Json] = documented.get("content", {})
        if not content:
            if response.status_code != 101 and body_read and response.content:
                yield "the document describes no body, but there is one"
            return
        actual = _media_type(response.headers.get("content-type"))
        if not any(_media_matches(m, actual) for m in content):
            yield f"Content-Type {actual!r} is not one of {', '.join(content)}"
            return
        if not body_read or "application/json" not in content or actual != "application/json":
            return  # only a body documented as JSON has a schema to meet
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            yield f"the body is not JSON: {exc}"
            return
        uri = OPENAPI_URI + location + "/" + _pointer("content", "application/json", "schema")
        for error in self.errors(uri, body):
            yield f"body {error} (schema {location})"

    # the event stream

    def check_frame(self, text: str, where: str = "frame") -> list[str]:
        """Check one server text frame; frames that are not JSON with a type pass."""
        try:
            frame = json.loads(text)
        except ValueError:
            return []
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return []
        kind = frame["type"]
        self.checked["frames"] += 1
        uri = self.server_messages.get(kind, self.server_messages["ApplicationEvent"])
        shown = text if len(text) <= 300 else text[:300] + "..."
        return [f"{where} {kind}: {e} in {shown}" for e in self.errors(uri, frame)]


@cache
def contract() -> Contract:
    """The contract, loaded and indexed once per test session."""
    return Contract(load("openapi.yaml"), load("events.asyncapi.yaml"))
