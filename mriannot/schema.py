"""OpenAPI schema helpers."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema_serializer
from rest_framework.views import APIView

from .fields import MAX_ID

#: An object id as the API takes it (mriannot/fields.py; ``<id:...>`` in paths).
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def name_nested_serializers(namespace: dict) -> None:
    """Give each view's nested ``InputSerializer`` a unique schema name (``<View>Input``).

    The house style keeps ``InputSerializer`` inside its view class; without this, every one
    of them would be called "Input" in the OpenAPI schema.
    """
    for name, obj in list(namespace.items()):
        if isinstance(obj, type) and issubclass(obj, APIView) and "InputSerializer" in vars(obj):
            component = name.removesuffix("Api") + "Input"
            extend_schema_serializer(component_name=component)(obj.InputSerializer)


def id_parameter(name: str, description: str = "") -> OpenApiParameter:
    """An optional query parameter that takes an object id (read with ``mriannot.fields.query_id``)."""
    return OpenApiParameter(name, ID_SCHEMA, required=False, description=description)


#: The body of every error (mriannot/errors.py); refusals may add fields that say more
#: (e.g. ``current_revision`` of a stale save).
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. not_found, invalid, stale_revision"},
        "detail": {"type": "string", "description": "what was wrong and how to fix it"},
        "fields": {"type": "object", "description": "per-field messages of a request that is not valid"},
    },
    "required": ["error", "detail"],
}


def error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the ``Error`` component, and a ``4XX`` answer of that
    shape on every operation (a status code an operation documents itself takes precedence)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    answer = {
        "description": "Refused: not logged in, not allowed, not found, not valid, conflicting or too large.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            operation.setdefault("responses", {}).setdefault("4XX", answer)
    return result
