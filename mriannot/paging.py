"""Paging of every list the API answers: ``limit`` and ``offset``, the total in ``X-Total-Count``,
the next and previous pages in ``Link`` (RFC 8288).

A list answers at most ``limit`` items (default :data:`PAGE_DEFAULT`, at most :data:`PAGE_MAX`),
so no request's cost grows with the project; a client that wants everything follows
``rel="next"`` until there is none (``frontend/src/js/api.js``: ``requestAll``). The body keeps
its shape (a JSON list, or the list inside an object such as the ranking's ``scans``).
"""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.response import Response

from .fields import MAX_ID

#: Items in a page when the request names no ``limit``.
PAGE_DEFAULT = 100
#: The most items one page holds.
PAGE_MAX = 500


class PageQuery(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=PAGE_MAX, required=False, default=PAGE_DEFAULT)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False, default=0)


@dataclass(frozen=True)
class Page:
    items: list
    total: int
    limit: int
    offset: int


def page_parameters(what: str = "items") -> list[OpenApiParameter]:
    """The OpenAPI parameters and response headers of a paged list."""
    return [
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
            description=f"{what} per page (default {PAGE_DEFAULT})",
        ),
        OpenApiParameter("offset", {"type": "integer", "minimum": 0, "maximum": MAX_ID}),
        OpenApiParameter("X-Total-Count", int, OpenApiParameter.HEADER, response=[200], description=f"{what} in all"),
        OpenApiParameter("Link", str, OpenApiParameter.HEADER, response=[200], description="next and previous pages"),
    ]


def page_query(request) -> tuple[int, int]:
    """``(limit, offset)`` of a request (400, naming the parameter, when one is not valid)."""
    query = PageQuery(data={k: request.query_params[k] for k in ("limit", "offset") if k in request.query_params})
    query.is_valid(raise_exception=True)
    return query.validated_data["limit"], query.validated_data["offset"]


def paginate(request, items) -> Page:
    """One page of ``items`` (a query set, counted and sliced in the database, or a list)."""
    limit, offset = page_query(request)
    total = len(items) if isinstance(items, list) else items.count()
    page = list(items[offset : offset + limit]) if offset < total else []
    return Page(items=page, total=total, limit=limit, offset=offset)


def _page_url(request, offset: int, limit: int) -> str:
    query = request.query_params.copy()
    query["offset"], query["limit"] = str(offset), str(limit)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def paged_response(request, data, page: Page) -> Response:
    """``data`` (the page's items, serialized, or an object holding them) with the paging headers."""
    response = Response(data)
    response["X-Total-Count"] = str(page.total)
    links = []
    if page.offset + page.limit < page.total:
        links.append(f'<{_page_url(request, page.offset + page.limit, page.limit)}>; rel="next"')
    if page.offset > 0:
        links.append(f'<{_page_url(request, max(page.offset - page.limit, 0), page.limit)}>; rel="prev"')
    if links:
        response["Link"] = ", ".join(links)
    return response
