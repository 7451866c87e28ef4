"""What the OpenAPI document says beyond a handler's return type: problem responses, response
headers, links between operations and the other media types a route answers with.

Litestar derives one success response from the return annotation. The rest of what a route can
answer is declared next to the handler with these helpers:

- ``responses=problem_responses(_404="…")``: each status code with the problem document
  (``application/problem+json``) as its schema;
- ``operation_class=documented(headers=…, links=…, content=…)``: headers, links and extra media
  types of a response. It also drops the ``400`` Litestar adds to every route with parameters:
  that one documents Litestar's own JSON error body, which this service never sends (every
  error is a problem document, see ``core.web``); a route that can answer ``400`` lists it in
  ``problem_responses``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Link,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
)

from core.errors import ProblemDocument
from core.web import PROBLEM_MEDIA_TYPE

__all__ = ("Header", "documented", "event_stream_schema", "problem_responses", "text_schema")


def problem_responses(**described: str) -> dict[int, ResponseSpec]:
    """OpenAPI responses of problem documents, by status code (``_404="…"``)."""
    return {
        int(code.lstrip("_")): ResponseSpec(
            data_container=ProblemDocument, description=text, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False
        )
        for code, text in described.items()
    }


def text_schema(description: str) -> Schema:
    """The schema of a body that is text (CSV, Prometheus' format, server-sent events)."""
    return Schema(type=OpenAPIType.STRING, description=description)


def event_stream_schema(events: tuple[str, ...], data: Schema | Reference, description: str) -> Schema:
    """The schema of each server-sent event of a ``text/event-stream`` (OpenAPI 3.1 reads a stream's
    ``schema`` as one event's): its ``event`` name, ``data`` as JSON of the ``data`` schema, ``id``
    and ``retry``."""
    return Schema(
        type=OpenAPIType.OBJECT,
        description=description,
        required=["event", "data"],
        properties={
            "event": Schema(type=OpenAPIType.STRING, enum=list(events)),
            "data": Schema(type=OpenAPIType.STRING, content_media_type="application/json", content_schema=data),
            "id": Schema(type=OpenAPIType.STRING, description="Increases by one with each event of the stream."),
            "retry": Schema(type=OpenAPIType.INTEGER, description="Milliseconds to wait before reconnecting."),
        },
    )


@dataclass(frozen=True)
class Header:
    """One response header as the OpenAPI document shows it."""

    description: str
    required: bool = False
    type: OpenAPIType = OpenAPIType.STRING
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further schema keywords (``Schema`` attribute names), e.g. ``{"const": 2}``."""

    def to_openapi(self) -> OpenAPIHeader:
        """The Header Object."""
        schema = Schema(type=self.type)
        for name, value in self.extra.items():
            setattr(schema, name, value)
        return OpenAPIHeader(schema=schema, description=self.description, required=self.required)


#: Litestar's schema of its own validation error body, which the exception handlers never send.
_LITESTAR_ERROR_PROPERTIES = frozenset({"status_code", "detail", "extra"})


def _is_litestar_error(response: OpenAPIResponse) -> bool:
    for media in (response.content or {}).values():
        schema = media.schema
        if isinstance(schema, Schema) and set(schema.properties or {}) == _LITESTAR_ERROR_PROPERTIES:
            return True
    return False


def documented(
    *,
    headers: Mapping[int, Mapping[str, Header]] | None = None,
    links: Mapping[int, Mapping[str, Link]] | None = None,
    content: Mapping[int, Mapping[str, Schema]] | None = None,
    empty_query: Collection[str] = (),
) -> type[Operation]:
    """An ``operation_class`` completing a route's generated responses, each by status code:
    ``headers`` and ``links`` are added to it, ``content`` adds media types (with their schema).
    The query parameters named in ``empty_query`` may be sent empty (``?passed=``: a form's empty
    field), which the handler reads as absent (``allowEmptyValue``)."""
    header_docs = dict(headers or {})
    link_docs = dict(links or {})
    media_docs = dict(content or {})

    def response(responses: dict[str, OpenAPIResponse | Reference], code: int) -> OpenAPIResponse:
        found = responses[str(code)]
        assert isinstance(found, OpenAPIResponse), code
        return found

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            for parameter in self.parameters or ():
                if isinstance(parameter, Parameter) and parameter.param_in == "query":
                    parameter.allow_empty_value = parameter.name in empty_query
            responses = self.responses if self.responses is not None else {}
            for code, generated in list(responses.items()):
                if code == "400" and isinstance(generated, OpenAPIResponse) and _is_litestar_error(generated):
                    del responses[code]
            for status, named_headers in header_docs.items():
                target = response(responses, status)
                target.headers = {**(target.headers or {}), **{k: h.to_openapi() for k, h in named_headers.items()}}
            for status, named_links in link_docs.items():
                target = response(responses, status)
                target.links = {**(target.links or {}), **named_links}
            for status, media_types in media_docs.items():
                target = response(responses, status)
                target.content = {
                    **(target.content or {}),
                    **{name: OpenAPIMediaType(schema=schema) for name, schema in media_types.items()},
                }

    return DocumentedOperation
