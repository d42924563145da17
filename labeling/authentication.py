"""Who is calling: API tokens, CSRF on log-in, and the answer to a locked-out log-in.

- :class:`ApiTokenAuthentication`: ``Authorization: Token <key>`` against :class:`ApiToken`
  (hashed keys, expiry); an expired token answers 401 ``token_expired``, saying how to get a
  new one.
- :func:`enforce_csrf`: the log-in view checks the CSRF token although nobody is logged in yet
  (DRF checks it only for session-authenticated users), so another site cannot log a browser
  in to an account of its choosing (login CSRF).
- Lockouts: django-axes counts failed log-ins per (username, client address) on every door
  (``/api/v1/auth/login/``, ``/api/v1/auth/token/``, the browser's log-in page which posts to
  the former, ``/admin/login/``). :func:`lockout_message` says when to try again;
  :func:`lockout_response` is axes' ``AXES_LOCKOUT_CALLABLE`` (the admin's log-in form).
"""

from __future__ import annotations

import math
from datetime import timedelta

from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.html import escape
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from . import auth_services
from .models import ApiToken

# --- API tokens ---------------------------------------------------------------------------------


class TokenExpired(exceptions.AuthenticationFailed):
    default_code = "token_expired"


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, checked against the stored sha256 of the key and its expiry."""

    keyword = "Token"
    model = ApiToken

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=auth_services.api_token_hash(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token: it does not exist or was revoked.")
        if token.expires_at <= timezone.now():
            raise TokenExpired(
                f"Token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Get a new one: POST /api/v1/auth/token/ with your username and password."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        auth_services.api_token_used(token=token)
        return token.user, token


# --- CSRF on log-in -----------------------------------------------------------------------------


def enforce_csrf(request) -> None:
    """Refuse (403) a request without a valid CSRF token, whoever sends it."""
    SessionAuthentication().enforce_csrf(request)


# --- lockouts ----------------------------------------------------------------------------------


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind ``MRIANNOT_TRUSTED_PROXIES`` reverse proxies
    the address the outermost of them saw (each proxy appends to X-Forwarded-For; entries further
    left come from the client and are not trusted)."""
    proxies = settings.MRIANNOT_TRUSTED_PROXIES
    remote = request.META.get("REMOTE_ADDR")
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def lockout_remaining(*, username: str | None, ip_address: str | None) -> timedelta | None:
    """How long the lockout of (``username``, ``ip_address``) still lasts: the whole cool-off if
    the attempts are not found, None when there is no cool-off (an admin must unlock it)."""
    cool_off = get_cool_off()
    if not cool_off:
        return None
    last = (
        AccessAttempt.objects.filter(username=username, ip_address=ip_address)
        .order_by("-attempt_time")
        .values_list("attempt_time", flat=True)
        .first()
    )
    if last is None:
        return cool_off
    return max(last + cool_off - timezone.now(), timedelta(0))


def lockout_message(*, username: str | None, ip_address: str | None) -> tuple[str, int | None]:
    """The message for a locked-out log-in, and the seconds until it may be tried again (None: until
    an admin unlocks it)."""
    remaining = lockout_remaining(username=username, ip_address=ip_address)
    locked = "Too many failed logins for this username from your address: log-in is locked. "
    if remaining is None:
        return locked + "Ask an admin to unlock it.", None
    minutes = max(1, math.ceil(remaining.total_seconds() / 60))
    message = locked + f"Try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask an admin to unlock it."
    return message, max(1, math.ceil(remaining.total_seconds()))


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """axes' answer to a locked-out log-in outside the API views (the admin's form): 429, JSON for
    API paths and clients that ask for JSON, a short page otherwise."""
    message, retry_after = lockout_message(
        username=get_client_username(request, credentials), ip_address=getattr(request, "axes_ip_address", None)
    )
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")
    if wants_json:
        response = JsonResponse({"error": "locked_out", "detail": message}, status=429)
    else:
        response = HttpResponse(
            "<!doctype html><html lang=en><meta charset=utf-8><title>Log-in locked</title>"
            f'<h1>Log-in locked</h1><p>{escape(message)}</p><p><a href="{escape(request.path)}">Back</a></p>',
            status=429,
            content_type="text/html; charset=utf-8",
        )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response
