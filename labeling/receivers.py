"""labeling listens to the auth framework: tokens die with a logout or a password change, and a
login lockout (django-axes) is written to the audit trail. Connected in ``LabelingConfig.ready``."""

from __future__ import annotations

from axes.helpers import get_cool_off
from axes.signals import user_locked_out
from django.contrib.auth import get_user_model, user_logged_out
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from . import auth_services

User = get_user_model()


@receiver(user_logged_out, dispatch_uid="labeling.revoke_tokens_on_logout")
def revoke_tokens_on_logout(sender, request, user, **kwargs) -> None:
    """Logging out (the browser, the API, the admin) revokes every API token of the user."""
    if user is not None and user.is_authenticated:
        auth_services.api_tokens_revoke_all(user=user, actor=user, reason="logout")


@receiver(pre_save, sender=User, dispatch_uid="labeling.note_password_change")
def note_password_change(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """Mark a saved user whose password hash differs from the stored one."""
    instance._mriannot_password_changed = False
    if raw or instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._mriannot_password_changed = stored is not None and stored != instance.password


@receiver(post_save, sender=User, dispatch_uid="labeling.revoke_tokens_on_password_change")
def revoke_tokens_on_password_change(sender, instance, created=False, raw=False, **kwargs) -> None:
    """A new password revokes every API token of the user (sessions end by Django's own rule)."""
    if getattr(instance, "_mriannot_password_changed", False):
        instance._mriannot_password_changed = False
        auth_services.api_tokens_revoke_all(user=instance, actor=None, reason="password changed")


@receiver(user_locked_out, dispatch_uid="labeling.audit_lockout")
def audit_lockout(sender, request, username, ip_address, **kwargs) -> None:
    """Audit the failure that starts a lockout (not each attempt refused while it lasts)."""
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None:  # an attempt refused during the lockout: axes records no new failure
        return
    auth_services.login_lockout_record(
        username=username,
        ip_address=ip_address,
        path=getattr(request, "axes_path_info", "") or request.path,
        failures=failures,
        cool_off=get_cool_off(request),
    )
