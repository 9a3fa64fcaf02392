"""The machine-readable contract, served from package data (public, no auth).

``GET /api/v1/docs/openapi.yaml`` (REST, OpenAPI 3.1) and
``GET /api/v1/docs/events.asyncapi.yaml`` (the event stream, AsyncAPI 3.0),
the files of ``trio_events/contract``.  The AsyncAPI document refers to
schemas of the OpenAPI one by the relative name ``openapi.yaml``, which
resolves here because both are served side by side.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from quart import Blueprint, Response

from ..errors import NotFound

__all__ = ["DOCUMENTS", "blueprint", "document"]

blueprint = Blueprint("docs", __name__, url_prefix="/api/v1/docs")
DOCUMENTS = ("openapi.yaml", "events.asyncapi.yaml")
CONTENT_TYPE = "application/yaml; charset=utf-8"


@cache
def document(name: str) -> bytes:
    """The bytes of one contract document, read once from the package."""
    if name not in DOCUMENTS:
        raise KeyError(name)
    return (resources.files("trio_events") / "contract" / name).read_bytes()


@blueprint.get("/<name>")
async def get_document(name: str) -> Response:
    if name not in DOCUMENTS:
        raise NotFound("No such document")
    response = Response(document(name), status=200, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
