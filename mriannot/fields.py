"""Input every app's API shares: numbers, ids, text and JSON that the database can hold.

A value the database cannot store must be refused at the door with a 400 that says why,
never found out by the database as a 500:

- NaN and the infinities ("NaN", "Infinity" and 1e999 parse as floats) break NOT NULL
  columns on SQLite and are not JSON: :class:`FiniteFloatField`.
- An id beyond 64 bits overflows the database driver: :class:`IdField` for bodies,
  :func:`query_id` for query strings, ``<id:...>`` (:mod:`mriannot.converters`) for paths.
- Free text and free JSON have a size: :data:`TEXT_MAX_CHARS`, :func:`json_validator` (which
  also refuses NUL characters: PostgreSQL cannot store them; DRF's CharField refuses them already).

This module imports no app (the project package sits below every app).
"""

from __future__ import annotations

import json
import math

from rest_framework import serializers

from .errors import ValidationFailed
from .parsers import contains_nul

#: The largest id a ``BigAutoField`` (a signed 64-bit integer) holds.
MAX_ID = 2**63 - 1

#: Free text a person writes (a project description, a note on a ground truth).
TEXT_MAX_CHARS = 5000

#: Free JSON a person sends (a consensus run's kernel options), serialized.
JSON_MAX_BYTES = 10_000


class FiniteFloatField(serializers.FloatField):
    """A float that is a number: "NaN", "Infinity" and numbers beyond float range are refused."""

    default_error_messages = {"not_finite": "Send a finite number; NaN and infinities are not numbers we can store."}

    def to_internal_value(self, data) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("not_finite")
        return value


class IdField(serializers.IntegerField):
    """The id of a stored object: an integer from 1 to :data:`MAX_ID`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


def parse_id(value: str | None, *, name: str) -> int:
    """``value`` as an object id, or :class:`~mriannot.errors.ValidationFailed` naming ``name``."""
    text = (value or "").strip()
    # At most 19 digits before int(): a long digit string is refused without converting it.
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID)) and 1 <= int(text) <= MAX_ID:
        return int(text)
    shown = value if value is None or len(value) <= 40 else value[:40] + "..."
    raise ValidationFailed(
        f"Parameter {name!r} must be an id (an integer from 1 to {MAX_ID}), not {shown!r}.", code="invalid_id"
    )


def query_id(request, name: str) -> int:
    """The id in query parameter ``name`` of a DRF request (400 when it is not an id)."""
    return parse_id(request.query_params.get(name), name=name)


def json_validator(max_bytes: int = JSON_MAX_BYTES):
    """A serializer validator for free JSON: at most ``max_bytes`` once serialized, no NUL characters.

    (JSON bodies meet the same rules in the parser; this covers form and multipart bodies too.)
    """

    def validate(value) -> None:
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > max_bytes:
            raise serializers.ValidationError(f"This JSON is {size} bytes; at most {max_bytes} are accepted.")
        if contains_nul(value):
            raise serializers.ValidationError("A string in this JSON holds a NUL character, which cannot be stored.")

    return validate
