"""Django serves the built pages (no browser): every page, and a clear 503 when not built."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/", "/login/", "/annotate/12345/"])
def test_pages_are_served_from_the_build(url, frontend_dist, settings):
    settings.MRIANNOT_FRONTEND_DIST = frontend_dist
    response = Client().get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module"' in html and "/static/assets/" in html
    assert response["Cache-Control"] == "no-cache"
    assert "csrftoken" in response.cookies, "the pages set the CSRF cookie the API needs"


def test_an_unbuilt_front_end_says_how_to_build_it(settings, tmp_path):
    settings.MRIANNOT_FRONTEND_DIST = tmp_path
    response = Client().get("/login/")
    assert response.status_code == 503
    assert b"scripts/run.sh" in response.content and b"npm run build" in response.content


def test_pages_take_get_only(frontend_dist, settings):
    settings.MRIANNOT_FRONTEND_DIST = frontend_dist
    assert Client().post("/login/").status_code == 405
