"""Refused input: a stable code and a message fit to show to whoever sent it.

Pure (no Django): the kernels that validate files raise subclasses of :class:`InputRefused`,
and the API's exception handler (``mriannot.errors``) answers them with the one JSON error
shape and :attr:`InputRefused.status_code`, without knowing the apps that raise them.
"""

from __future__ import annotations


class InputRefused(ValueError):
    """Input the server refuses: ``code`` (stable, machine-readable) and ``message`` (human)."""

    #: HTTP status the API answers with.
    status_code = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
