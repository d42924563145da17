"""Authentication and sessions, hardened: lockouts, password rules, API tokens, redirects, CSRF, CSP.

Every door that takes a password (the API's session log-in, the browser's log-in page, the
token endpoint, the admin's form) locks a (username, address) out after
``AXES_FAILURE_LIMIT`` failures, answers 429 while it lasts, and writes the lockout to the
audit trail. Time is never waited for: a lockout "ends" by moving its attempts into the past,
a token "expires" by moving its expiry into the past.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import auth_services
from labeling.authentication import client_ip
from labeling.models import ApiToken, AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"


# --- the four doors ------------------------------------------------------------------------------


def _api_login(client: APIClient, username: str, password: str):
    csrf = client.get("/api/v1/auth/login/").json()["csrf_token"]
    return client.post(
        "/api/v1/auth/login/", {"username": username, "password": password}, format="json", HTTP_X_CSRFTOKEN=csrf
    )


def _browser_login(client: Client, username: str, password: str):
    """What login.js does: the page sets the CSRF cookie, the form posts JSON with the header."""
    client.get("/login/")
    return client.post(
        "/api/v1/auth/login/",
        {"username": username, "password": password},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        HTTP_ACCEPT="application/json",
    )


def _token(client: APIClient, username: str, password: str):
    return client.post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")


def _admin_login(client: Client, username: str, password: str):
    client.get("/admin/login/")
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )


@dataclass(frozen=True)
class Door:
    name: str
    make_client: Callable
    attempt: Callable
    refused: int  # the status of a plain wrong password
    json: bool  # whether the 429 answers JSON

    def __repr__(self) -> str:
        return self.name


DOORS = [
    Door("api-login", lambda: APIClient(enforce_csrf_checks=True), _api_login, 400, True),
    Door("browser-login", lambda: Client(enforce_csrf_checks=True), _browser_login, 400, True),
    Door("token", APIClient, _token, 400, True),
    Door("admin-login", lambda: Client(enforce_csrf_checks=True), _admin_login, 200, False),  # the form again
]


@pytest.fixture
def admin_user(world):
    """The admin's form only lets staff in: the lead is made staff for the admin door."""
    world.lead.is_staff = True
    world.lead.save(update_fields=["is_staff"])
    return world.lead


@pytest.mark.parametrize("door", DOORS, ids=repr)
def test_each_door_locks_out_after_the_failure_limit(world, admin_user, door, settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    client = door.make_client()
    for _ in range(4):
        assert door.attempt(client, "lead", WRONG).status_code == door.refused

    locked = door.attempt(client, "lead", WRONG)  # the fifth failure locks
    assert locked.status_code == 429
    right = door.attempt(client, "lead", factories.PASSWORD)
    assert right.status_code == 429, "the right password is refused while locked out"
    assert "_auth_user_id" not in client.session

    text = right.json()["detail"] if door.json else right.content.decode()
    if door.json:
        assert right.json()["error"] == "locked_out"
    assert "Too many failed logins" in text and "try again in 15 minutes" in text.lower()
    assert 0 < int(right["Retry-After"]) <= 15 * 60

    # Audited once (the failure that locked, not each refusal), for every project's admins to see.
    events = AuditEvent.objects.filter(action="auth.lockout")
    assert events.count() == 1
    event = events.get()
    assert event.project is None and event.target_type == "user" and event.target_id == str(world.lead.pk)
    assert event.data["username"] == "lead" and event.data["failures"] == 5 and event.data["cool_off_minutes"] == 15


@pytest.mark.parametrize("door", DOORS, ids=repr)
def test_a_lockout_ends_after_the_cool_off(world, admin_user, door, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=10)
    client = door.make_client()
    for _ in range(3):
        door.attempt(client, "lead", WRONG)
    assert door.attempt(client, "lead", factories.PASSWORD).status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=11))
    ok = door.attempt(client, "lead", factories.PASSWORD)
    assert ok.status_code == (302 if door.name == "admin-login" else 200)
    assert not AccessAttempt.objects.exists(), "a successful log-in clears the failures"


def test_a_lockout_is_per_username_and_address(world, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        _token(APIClient(), "lead", WRONG)
    assert _token(APIClient(), "lead", factories.PASSWORD).status_code == 429
    assert _token(APIClient(), "rater1", factories.PASSWORD).status_code == 200, "another user is not locked"
    elsewhere = APIClient(REMOTE_ADDR="10.1.2.3")
    assert _token(elsewhere, "lead", factories.PASSWORD).status_code == 200, "nor the same user elsewhere"


def test_unknown_usernames_lock_out_and_are_audited_as_typed(world, settings):
    settings.AXES_FAILURE_LIMIT = 2
    for _ in range(2):
        response = _token(APIClient(), "nosuchuser", WRONG)
    assert response.status_code == 429 and response.json()["error"] == "locked_out"
    event = AuditEvent.objects.get(action="auth.lockout")
    assert event.target_id == "" and event.data["username"] == "nosuchuser" and event.data["known_user"] is False


def test_behind_a_proxy_the_client_address_is_the_one_the_proxy_saw(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    settings.MRIANNOT_TRUSTED_PROXIES = 0
    assert client_ip(request) == "10.0.0.1"
    settings.MRIANNOT_TRUSTED_PROXIES = 1
    assert client_ip(request) == "203.0.113.9", "the left entry was written by the client: not trusted"
    settings.MRIANNOT_TRUSTED_PROXIES = 3
    assert client_ip(request) == "10.0.0.1", "fewer entries than proxies: the peer address"


# --- password rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password, why",
    [
        ("Tr0ub4dor&3", "too short"),  # 11 characters
        ("qwerty123456", "too common"),
        ("204958671093481", "entirely numeric"),
        ("radiologist-77", "too similar"),
    ],
)
def test_weak_passwords_are_refused(world, password, why):
    user = factories.UserFactory(username="radiologist")
    with pytest.raises(ValidationError) as refused:
        validate_password(password, user=user)
    assert why in " ".join(refused.value.messages)

    form = SetPasswordForm(user, {"new_password1": password, "new_password2": password})
    assert not form.is_valid(), "the password forms (admin, reset) refuse it too"


def test_a_long_uncommon_password_is_accepted(world, settings):
    validate_password("correct horse battery staple", user=world.lead)
    assert settings.AUTH_PASSWORD_VALIDATORS[1]["OPTIONS"]["min_length"] == 12


# --- API tokens ------------------------------------------------------------------------------------


def _authed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _new_token(username: str = "lead", name: str = "") -> tuple[str, dict]:
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": factories.PASSWORD, "name": name}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    return body["token"], body


def test_a_token_is_stored_hashed_expires_and_is_shown_once(world, settings):
    key, body = _new_token(name="nightly export")
    token = ApiToken.objects.get(pk=body["id"])
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {token.key_hash, token.name, token.prefix} and token.prefix == key[:8]
    assert token.expires_at - token.created_at == pytest.approx(
        timedelta(days=settings.MRIANNOT_API_TOKEN_TTL_DAYS), abs=timedelta(seconds=5)
    )
    assert body["name"] == "nightly export" and body["expired"] is False

    me = _authed(key).get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["username"] == "lead"
    token.refresh_from_db()
    assert token.last_used_at is not None
    listed = APIClient()
    listed.force_authenticate(world.lead)
    assert "token" not in listed.get("/api/v1/me/tokens/").json()[0], "the key is never shown again"
    assert AuditEvent.objects.filter(action="api_token.create", project=None, target_id=str(token.pk)).exists()


def test_an_expired_token_answers_401_saying_so(world):
    key, body = _new_token()
    ApiToken.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _authed(key).get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == "token_expired"
    assert "expired" in response.json()["detail"] and "POST /api/v1/auth/token/" in response.json()["detail"]


def test_an_unknown_token_answers_401(world):
    response = _authed("x" * 43).get("/api/v1/me/")
    assert response.status_code == 401 and "Invalid token" in response.json()["detail"]


def test_logging_out_revokes_the_users_tokens(world):
    key, _ = _new_token()
    other_key, _ = _new_token("rater1")
    browser = APIClient(enforce_csrf_checks=True)
    assert _api_login(browser, "lead", factories.PASSWORD).status_code == 200
    logout = browser.post("/api/v1/auth/logout/", HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value)
    assert logout.status_code == 204

    assert _authed(key).get("/api/v1/me/").status_code == 401
    assert _authed(other_key).get("/api/v1/me/").status_code == 200, "only the user's own tokens"
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert event.project is None and event.data["reason"] == "logout"


def test_logging_out_with_a_token_revokes_it(world):
    key, _ = _new_token()
    assert _authed(key).post("/api/v1/auth/logout/").status_code == 204
    assert _authed(key).get("/api/v1/me/").status_code == 401


def test_a_password_change_revokes_the_users_tokens(world):
    key, _ = _new_token()
    second, _ = _new_token()
    world.lead.first_name = "Lea"
    world.lead.save()
    assert _authed(key).get("/api/v1/me/").status_code == 200, "other changes keep the tokens"

    new = "a new long passphrase"
    form = SetPasswordForm(world.lead, {"new_password1": new, "new_password2": new})
    assert form.is_valid(), form.errors
    form.save()
    assert _authed(key).get("/api/v1/me/").status_code == 401
    assert _authed(second).get("/api/v1/me/").status_code == 401
    assert set(AuditEvent.objects.filter(action="api_token.revoke").values_list("data__reason", flat=True)) == {
        "password changed"
    }


def test_set_password_and_save_revokes_too(world):
    key, _ = _new_token()
    world.lead.set_password("another long passphrase")
    world.lead.save()
    assert _authed(key).get("/api/v1/me/").status_code == 401


def test_a_user_lists_and_revokes_their_own_tokens(world):
    first, _ = _new_token(name="laptop")
    second, two = _new_token(name="cluster")
    _, theirs = _new_token("rater1", name="rater's")
    me = _authed(first)

    listed = me.get("/api/v1/me/tokens/").json()
    assert {t["name"] for t in listed} == {"laptop", "cluster"}
    fields = {"id", "name", "prefix", "created_at", "expires_at", "last_used_at", "expired"}
    assert all(set(t) == fields for t in listed), "no key, no hash"

    assert me.delete(f"/api/v1/me/tokens/{theirs['id']}/").status_code == 404, "another user's token is not found"
    assert ApiToken.objects.filter(pk=theirs["id"]).exists()

    assert me.delete(f"/api/v1/me/tokens/{two['id']}/").status_code == 204
    assert _authed(second).get("/api/v1/me/").status_code == 401
    assert [t["name"] for t in me.get("/api/v1/me/tokens/").json()] == ["laptop"]
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert event.actor == world.lead and event.data["name"] == "cluster"


def test_a_session_makes_named_tokens_and_a_token_cannot(world):
    browser = APIClient(enforce_csrf_checks=True)
    _api_login(browser, "lead", factories.PASSWORD)
    made = browser.post(
        "/api/v1/me/tokens/", {"name": "notebook"}, format="json", HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value
    )
    assert made.status_code == 201 and made.json()["name"] == "notebook"
    key = made.json()["token"]
    assert _authed(key).get("/api/v1/me/").status_code == 200

    refused = _authed(key).post("/api/v1/me/tokens/", {"name": "more"}, format="json")
    assert refused.status_code == 403 and "cannot make tokens" in refused.json()["detail"]


def test_making_a_token_purges_the_users_expired_ones(world):
    _, old = _new_token()
    ApiToken.objects.filter(pk=old["id"]).update(expires_at=timezone.now() - timedelta(days=1))
    auth_services.api_token_create(user=world.lead, name="fresh")
    assert list(ApiToken.objects.filter(user=world.lead).values_list("name", flat=True)) == ["fresh"]


# --- open redirect ------------------------------------------------------------------------------------


@pytest.fixture
def fake_dist(settings, tmp_path):
    (tmp_path / "login.html").write_text("<!doctype html><title>Log in</title>")
    settings.MRIANNOT_FRONTEND_DIST = tmp_path
    return tmp_path


@pytest.mark.parametrize(
    "query",
    [
        "next=/%5Cevil.example/",
        "next=/%5C%5Cevil.example/",
        "next=/%09/evil.example/",
        "next=%09//evil.example/",
        "next=/%0A/evil.example/",
        "next=//evil.example/",
        "next=https://evil.example/",
        "next=javascript:alert(1)",
    ],
)
def test_a_next_that_leaves_the_site_is_dropped(fake_dist, query):
    response = Client().get(f"/login/?{query}")
    assert response.status_code == 302 and response["Location"] == "/login/"


@pytest.mark.parametrize("query", ["", "next=/", "next=/annotate/12/", "next=/dashboard/3/%3Ftab%3Dagreement"])
def test_a_next_on_the_site_is_kept(fake_dist, query):
    response = Client().get(f"/login/?{query}")
    assert response.status_code == 200 and b"Log in" in response.content


# --- login CSRF -------------------------------------------------------------------------------------


def test_the_login_post_without_a_csrf_token_is_refused(world):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post("/api/v1/auth/login/", {"username": "lead", "password": factories.PASSWORD}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert "sessionid" not in client.cookies


def test_a_cross_site_form_cannot_log_the_browser_in(world):
    """The attack: another site's page auto-submits a form to our log-in with its own account."""
    client = Client(enforce_csrf_checks=True)
    client.get("/login/")  # the victim has our CSRF cookie, but the other site cannot read it
    response = client.post(
        "/api/v1/auth/login/", {"username": "lead", "password": factories.PASSWORD}, HTTP_ORIGIN="https://evil.example"
    )
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


# --- Content-Security-Policy and the other headers ---------------------------------------------------


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def test_pages_send_a_strict_content_security_policy(fake_dist):
    response = Client().get("/login/")
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_api_docs_have_no_inline_script_and_a_nonced_style(world):
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "every script comes from a URL"
    nonce = re.search(r'<style nonce="([^"]+)"', html).group(1)
    assert f"'nonce-{nonce}'" in _policy(response)["style-src"]
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_the_unbuilt_page_styles_itself_with_the_nonce(settings, tmp_path):
    settings.MRIANNOT_FRONTEND_DIST = tmp_path
    response = Client().get("/login/")
    nonce = re.search(r'<style nonce="([^"]+)"', response.content.decode()).group(1)
    assert f"'nonce-{nonce}'" in _policy(response)["style-src"]


def test_the_admin_login_page_has_the_policy(world):
    response = Client().get("/admin/login/")
    assert response.status_code == 200 and _policy(response)["default-src"] == ["'self'"]
