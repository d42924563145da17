"""Domain errors raised by services, and the API's single error format.

Every error the API returns is JSON of one shape::

    {"error": "<stable_code>", "detail": "<what was wrong and how to fix it>", "fields": {...}}

``fields`` appears only for per-field validation errors. Services raise the errors below;
views never build error responses by hand.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .refusals import InputRefused


class ServiceError(Exception):
    """A refusal by a service, with a stable code and a message for people."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra or {}


class ValidationFailed(ServiceError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"


class NotAllowed(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"


class NotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class TooLarge(ServiceError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


_DRF_HINTS = {
    "not_authenticated": "Log in, or send 'Authorization: Token <key>' (POST /api/v1/auth/token/ gives one).",
    "authentication_failed": "Check the username, password or token.",
    "permission_denied": "Ask a lead of the project for the role this action needs.",
    "not_found": "Check the id; objects you may not see are reported as not found.",
    "method_not_allowed": "See /api/docs/ for the methods this endpoint takes.",
    "unsupported_media_type": "Send JSON, multipart/form-data, or NIfTI bytes as the endpoint documents.",
    "parse_error": "The request body could not be parsed; send valid JSON.",
}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Turn service errors, refused input (e.g. the NIfTI door's) and DRF errors into the one JSON
    error shape."""
    if isinstance(exc, ServiceError):
        body = {"error": exc.code, "detail": exc.message, **exc.extra}
        return Response(body, status=exc.status_code)
    if isinstance(exc, InputRefused):
        return Response({"error": exc.code, "detail": exc.message}, status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {
            "error": "invalid",
            "detail": "The request is not valid: " + _flatten(fields),
            "fields": fields,
        }
        return response
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    detail = _flatten(response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data)
    hint = _DRF_HINTS.get(code)
    response.data = {"error": code, "detail": f"{detail} {hint}" if hint else detail}
    return response
