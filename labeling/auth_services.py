"""Writes about logging in: API tokens (made, used, revoked) and login lockouts.

Like :mod:`labeling.services`: keyword-only functions, one transaction each, an audit event
for every change (project ``None``: these belong to no project; site admins see them in the
admin's audit list, with action ``api_token.*`` or ``auth.lockout``).

A token's key is random (256 bits) and shown once; only its sha256 is stored, so a copy of the
database gives no working key.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import ApiToken, AuditEvent
from .services import audit_log

#: ``last_used_at`` is written at most this often per token (one write per request is too many).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_hash(key: str) -> str:
    """The stored form of a token key: its sha256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_token_ttl() -> timedelta:
    return timedelta(days=settings.MRIANNOT_API_TOKEN_TTL_DAYS)


@transaction.atomic
def api_token_create(*, user, name: str = "", actor=None, via: str = "password") -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns the row and the key (the only time the key is known).

    The user's expired tokens are deleted on the way: they can never be used again.
    """
    ApiToken.objects.filter(user=user, expires_at__lte=timezone.now()).delete()
    key = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100],
        key_hash=api_token_hash(key),
        prefix=key[:8],
        expires_at=timezone.now() + api_token_ttl(),
    )
    audit_log(
        actor=actor or user,
        project=None,
        action="api_token.create",
        target=token,
        data={"user": user.get_username(), "name": token.name, "expires_at": token.expires_at.isoformat(), "via": via},
    )
    return token, key


def api_token_used(*, token: ApiToken) -> None:
    """Note that ``token`` was just used (at most once per :data:`LAST_USED_RESOLUTION`; not audited)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor, reason: str = "revoked") -> None:
    """Revoke one token: it stops working at once."""
    audit_log(
        actor=actor,
        project=None,
        action="api_token.revoke",
        target=token,
        data={"user": token.user.get_username(), "name": token.name, "prefix": token.prefix, "reason": reason},
    )
    token.delete()


@transaction.atomic
def api_tokens_revoke_all(*, user, actor, reason: str) -> int:
    """Revoke every token of ``user`` (on logout, on a password change); returns how many."""
    tokens = list(ApiToken.objects.filter(user=user).select_related("user"))
    for token in tokens:
        api_token_revoke(token=token, actor=actor, reason=reason)
    return len(tokens)


def login_lockout_record(
    *, username: str, ip_address: str | None, path: str, failures: int | None, cool_off: timedelta | None
) -> AuditEvent:
    """Audit a lockout: ``username`` failed to log in too often from ``ip_address``.

    The target is the user when the name exists, else the name as typed (an attacker may guess).
    """
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first() if username else None
    data = {
        "username": username or "",
        "ip_address": ip_address or "",
        "path": path,
        "failures": failures,
        "cool_off_minutes": int(cool_off.total_seconds() // 60) if cool_off else None,
        "known_user": user is not None,
    }
    if user is not None:
        return audit_log(actor=None, project=None, action="auth.lockout", target=user, data=data)
    return AuditEvent.objects.create(
        actor=None, project=None, action="auth.lockout", target_type="user", target_id="", data=data
    )
