"""The API's JSON parser: a bounded body, bounded nesting, finite numbers.

DRF's own parser hands any body to ``json.load``: a body nested 100,000 levels deep raises
RecursionError (a 500, and under DEBUG a debug page the size of the body), 1e999 parses as
infinity, and "\u0000" in a string reaches PostgreSQL, which cannot store it (a 500). This one
reads at most ``MRIANNOT_MAX_JSON_BYTES`` (413 beyond), counts the nesting with a flat scan
before parsing (400 beyond :data:`MAX_DEPTH`), and refuses numbers that are not finite and
strings with NUL characters (400). It is the JSON parser of every DRF view (``REST_FRAMEWORK``
``DEFAULT_PARSER_CLASSES`` in the settings).
"""

from __future__ import annotations

import json
import math
import re

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

#: The deepest nesting of arrays and objects accepted; the API's bodies use three levels.
MAX_DEPTH = 32

# A JSON string, escapes included (the unrolled form: no backtracking on long strings).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest deeper than ``limit``, without recursion.

    Brackets inside strings do not count. For text that is not JSON the answer does not
    matter: the parser refuses it anyway.
    """
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def contains_nul(value) -> bool:
    """Whether a string, or a key or string anywhere inside lists and dicts, holds a NUL character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


class BodyTooLarge(APIException):
    # Not mriannot.errors.TooLarge: DRF imports this module while mriannot.errors imports DRF.
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond the range of a float")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.MRIANNOT_MAX_JSON_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise BodyTooLarge(f"The JSON body is larger than {limit} bytes (MRIANNOT_MAX_JSON_BYTES).")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding} text: {exc}") from None
        if json_depth_exceeds(text):
            raise ParseError(f"JSON parse error - the body nests arrays and objects deeper than {MAX_DEPTH} levels.")
        try:
            data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if contains_nul(data):
            raise ParseError("JSON parse error - a string holds a NUL character (\\u0000), which cannot be stored.")
        return data
