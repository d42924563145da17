"""OpenAPI schema helpers."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_serializer
from rest_framework.views import APIView


def name_nested_serializers(namespace: dict) -> None:
    """Give each view's nested ``InputSerializer`` a unique schema name (``<View>Input``).

    The house style keeps ``InputSerializer`` inside its view class; without this, every one
    of them would be called "Input" in the OpenAPI schema.
    """
    for name, obj in list(namespace.items()):
        if isinstance(obj, type) and issubclass(obj, APIView) and "InputSerializer" in vars(obj):
            component = name.removesuffix("Api") + "Input"
            extend_schema_serializer(component_name=component)(obj.InputSerializer)
