"""Domain errors raised by services, and the API's single error format.

Every error the API returns is JSON of one shape::

    {"error": "<stable_code>", "detail": "<what was wrong and how to fix it>", "fields": {...}}

``fields`` appears only for per-field validation errors. Services raise the errors below;
views never build error responses by hand. A full disk, a read-only data folder or a busy
database is not the client's fault: it answers 503 with a ``Retry-After`` header, in DRF views
through :func:`api_exception_handler` and elsewhere through :class:`StorageFaultMiddleware`.
"""

from __future__ import annotations

import errno
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError
from django.http import Http404, JsonResponse
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


class LockedOut(ServiceError):
    """Too many failed log-ins: refused for a while (429, with ``Retry-After`` when it ends)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "locked_out"

    def __init__(self, message: str, *, retry_after_s: int | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageUnavailable(ServiceError):
    """The server cannot store data right now (disk full, read-only, database busy); nothing was saved."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "storage_unavailable"

    def __init__(self, why: str, *, reason: str, retry_after_s: int = 30):
        super().__init__(
            f"The server cannot store data right now ({why}). Nothing was saved; try again later.",
            extra={"reason": reason},
        )
        self.retry_after_s = retry_after_s


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE_ERRNOS = {errno.EACCES, errno.EPERM}
# PostgreSQL SQLSTATEs: lock_not_available, query_canceled (statement timeout), deadlock_detected;
# disk_full; read_only_sql_transaction.
_BUSY_SQLSTATES = {"55P03", "57014", "40P01"}
_FULL_SQLSTATES = {"53100"}
_READ_ONLY_SQLSTATES = {"25006"}


def storage_fault(exc: BaseException) -> StorageUnavailable | None:
    """The 503 that ``exc`` (or an exception it was raised from) stands for, or None for any other error."""
    for _ in range(5):
        if exc is None or isinstance(exc, exceptions.APIException | InputRefused):
            return None
        if isinstance(exc, ServiceError):  # a service's own answer, unless it is this one
            return exc if isinstance(exc, StorageUnavailable) else None
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return StorageUnavailable("disk full", reason="disk_full", retry_after_s=60)
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return StorageUnavailable("the data folder is read-only", reason="read_only", retry_after_s=60)
        if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE_ERRNOS:
            return StorageUnavailable("the data folder is not writable", reason="read_only", retry_after_s=60)
        if isinstance(exc, DatabaseError):
            message = str(exc).lower()
            state = getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)
            if "locked" in message or "lock timeout" in message or state in _BUSY_SQLSTATES:
                return StorageUnavailable("the database is busy", reason="database_busy", retry_after_s=5)
            if "disk is full" in message or state in _FULL_SQLSTATES:
                return StorageUnavailable("disk full", reason="disk_full", retry_after_s=60)
            if "readonly database" in message or state in _READ_ONLY_SQLSTATES:
                return StorageUnavailable("the database is read-only", reason="read_only", retry_after_s=60)
        exc = exc.__cause__ or exc.__context__
    return None


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
    error shape; a storage fault answers 503 with ``Retry-After``."""
    fault = storage_fault(exc)
    if fault is not None:
        body = {"error": fault.code, "detail": fault.message, **fault.extra}
        return Response(body, status=fault.status_code, headers={"Retry-After": str(fault.retry_after_s)})
    if isinstance(exc, ServiceError):
        body = {"error": exc.code, "detail": exc.message, **exc.extra}
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return Response(body, status=exc.status_code, headers=headers)
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


class StorageFaultMiddleware:
    """Outside DRF views too, a storage fault answers the same 503 JSON instead of a 500 page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        fault = storage_fault(exception)
        return None if fault is None else fault_response(fault)


def fault_response(fault: StorageUnavailable) -> JsonResponse:
    """The 503 JSON answer to a storage fault, with when to try again."""
    response = JsonResponse({"error": fault.code, "detail": fault.message, **fault.extra}, status=503)
    response["Retry-After"] = str(fault.retry_after_s)
    return response
