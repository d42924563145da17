"""Log-in in the browser, hardened: the lockout message, ?next= that stays on the site, and the
pages outside the front end (API docs, admin) under the Content-Security-Policy.

The ``page`` fixture fails a test on any CSP violation the browser reports.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def staff(transactional_db):
    from tests import factories

    factories.UserFactory(username="rater1")
    return factories.UserFactory(username="lead", is_staff=True, is_superuser=True)


def _submit(page, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-button")


def test_the_login_page_says_when_a_lockout_ends(live_server, page, staff, settings, shot):
    from tests import factories

    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    page.goto(f"{live_server.url}/login/")
    for _ in range(2):
        _submit(page, "rater1", "not the password")
        page.wait_for_selector("#login-error:has-text('wrong password')")
        page.evaluate("document.getElementById('login-error').textContent = ''")
    _submit(page, "rater1", "not the password")
    page.wait_for_selector("#login-error:has-text('Too many failed logins')")
    _submit(page, "rater1", factories.PASSWORD)
    page.wait_for_function("document.getElementById('login-button').disabled === false")
    assert "Try again in 15 minutes" in page.inner_text("#login-error")
    assert page.url == f"{live_server.url}/login/", "still on the log-in page"
    shot(page, "locked")


@pytest.mark.parametrize("next_value", ["/%5Cevil.example/", "/%09/evil.example/", "/%5C%5Cevil.example/"])
def test_logging_in_with_an_off_site_next_stays_on_the_site(live_server, page, staff, next_value):
    from tests import factories

    page.goto(f"{live_server.url}/login/?next={next_value}")
    assert page.url == f"{live_server.url}/login/", "the server dropped the next"
    _submit(page, "rater1", factories.PASSWORD)
    page.wait_for_url(f"{live_server.url}/")


def test_the_api_docs_work_under_the_policy(live_server, page, staff):
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector("#swagger-ui .info .title")
    assert "mriannot API" in page.inner_text("#swagger-ui .info .title")
    page.wait_for_selector("#swagger-ui .opblock-summary-path[data-path='/api/v1/me/tokens/']")


def test_the_admin_works_under_the_policy(live_server, page, staff):
    from tests import factories

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "lead")
    page.fill("#id_password", factories.PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/labeling/auditevent/")
    page.wait_for_selector("#changelist")
    page.goto(f"{live_server.url}/admin/auth/user/{staff.pk}/change/")
    page.wait_for_selector("#user_form")


def test_the_built_pages_need_no_eval(frontend_dist):
    """The browser tests add 'unsafe-eval' for Playwright's own waits (conftest.py); this checks
    that the pages' code would not need it: no eval and no Function constructor in the build."""
    calls = re.compile(r"(?<![\w.$])eval\(|\bnew Function\(|(?<![\w.$])Function\(\s*[`'\"]")
    offenders = {p.name for p in (frontend_dist / "assets").glob("*.js") if calls.search(p.read_text("utf-8"))}
    assert not offenders, f"these bundles evaluate strings as code: {sorted(offenders)}"
