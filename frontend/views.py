"""Serve the built front-end pages (Vite output in frontend/dist/).

The pages are static HTML: all data comes from the API. Their scripts and styles are static
files under /static/ (frontend/dist is in STATICFILES_DIRS). Without a build, every page
answers 503 with a page that says how to build it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from labeling import selectors

DIST = Path(__file__).resolve().parent / "dist"


def _page(request: HttpRequest, name: str, *, status: int = 200) -> HttpResponse:
    path = Path(getattr(settings, "MRIANNOT_FRONTEND_DIST", DIST)) / f"{name}.html"
    try:
        html = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return render(
            request,
            "frontend/not_built.html",
            {"page": f"{name}.html", "dist": str(path.parent)},
            status=503,
        )
    response = HttpResponse(html, content_type="text/html; charset=utf-8", status=status)
    # The HTML names content-hashed assets: never cache it, so a new build is picked up at once.
    response["Cache-Control"] = "no-cache"
    return response


def safe_next(request: HttpRequest, url: str | None) -> bool:
    """True when ``url`` is a path on this site: one leading '/', no scheme or host of its own,
    nothing a browser reads as another origin (``/\\evil.example``, ``/%09/evil.example``)."""
    return bool(
        url
        and url.startswith("/")
        and not url.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    )


@require_GET
@ensure_csrf_cookie
def login_page(request: HttpRequest) -> HttpResponse:
    # Where to go after logging in (login.js reads ?next= and checks it again): a next that
    # leaves the site is dropped here, so the page never holds one.
    next_url = request.GET.get("next")
    if next_url is not None and not safe_next(request, next_url):
        return HttpResponseRedirect(request.path)
    return _page(request, "login")


@require_GET
@ensure_csrf_cookie
def worklist_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "worklist")


@require_GET
@ensure_csrf_cookie
def annotate_page(request: HttpRequest, assignment_id: int) -> HttpResponse:
    return _page(request, "annotate")


@require_GET
@ensure_csrf_cookie
def dashboard_page(request: HttpRequest, project_id: int | None = None) -> HttpResponse:
    return _page(request, "dashboard")


@require_GET
@ensure_csrf_cookie
def review_page(request: HttpRequest, scan_id: int) -> HttpResponse:
    return _page(request, "review")


@require_GET
@ensure_csrf_cookie
def exports_page(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, "exports")


@require_GET
@ensure_csrf_cookie
def projects_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "projects")


def _lead_page_status(request: HttpRequest, project_id: int) -> int:
    """The status of a project's lead page: 200 for its leads and admins (and for nobody logged in:
    the page sends them to log in), 403 for its annotators, 404 for anyone else. The page itself
    says why (it reads the same from the API, which refuses them the data)."""
    user = request.user
    if not user.is_authenticated:
        return 200
    project = selectors.project_list(user=user).filter(pk=project_id).first()
    if project is None:
        return 404
    return 200 if selectors.user_manages_project(user=user, project=project) else 403


@require_GET
@ensure_csrf_cookie
def project_home_page(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, "project", status=_lead_page_status(request, project_id))


@require_GET
@ensure_csrf_cookie
def project_settings_page(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, "project-settings", status=_lead_page_status(request, project_id))


@require_GET
@ensure_csrf_cookie
def project_people_page(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, "project-people", status=_lead_page_status(request, project_id))


@require_GET
@ensure_csrf_cookie
def project_scans_page(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, "scans", status=_lead_page_status(request, project_id))
