"""``<id:name>`` in URL patterns: an object id that the database can hold.

Django's ``<int:...>`` matches any run of digits, and a path id beyond 64 bits reaches the
database driver, which answers with an OverflowError (a 500). ``<id:...>`` matches at most
19 digits and no value above :data:`mriannot.fields.MAX_ID`; anything else is not a match,
so the path answers 404 like any other unknown object. Importing this module registers it.
"""

from __future__ import annotations

from django.urls import register_converter

from .fields import MAX_ID


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is beyond the largest id, {MAX_ID}")  # Django: no match, so 404
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
