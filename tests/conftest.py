"""Shared fixtures: users and projects, tiny NIfTI volumes, a real Redis and Celery worker."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path):
    """Every test writes files into its own folder, so 'nothing was stored' can be checked."""
    if not request.config.pluginmanager.hasplugin("django"):
        return None  # pure kernel tests run with -p no:django
    settings = request.getfixturevalue("settings")
    media = tmp_path / "media"
    media.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    settings.MEDIA_ROOT = str(media)
    return media


@pytest.fixture(autouse=True)
def _audit_trail_flushable(request):
    """Lift the audit trail's triggers for a transactional test (a live server, a Celery worker).

    The triggers refuse every DELETE of an audit event (labeling/audit_triggers.py), and such a
    test's teardown empties every table (DELETE on SQLite, TRUNCATE on PostgreSQL). They are
    dropped before the test; the flush ends with post_migrate, which installs them again
    (labeling/apps.py). Nothing is done after the test here: with ``django_db(transaction=True)``
    this fixture ends before the flush.
    """
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    marker = request.node.get_closest_marker("django_db")
    transactional = {"transactional_db", "live_server"} & set(request.fixturenames) or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    if not transactional:
        yield
        return
    from django.db import connection

    from labeling import audit_triggers

    request.getfixturevalue("django_db_setup")
    with request.getfixturevalue("django_db_blocker").unblock():
        audit_triggers.remove(connection)
    yield


@pytest.fixture
def stored_files(_media_root):
    """A function listing every file under the test's storage folder (relative paths)."""
    return lambda: sorted(str(p.relative_to(_media_root)) for p in _media_root.rglob("*") if p.is_file())


@pytest.fixture
def world(db):
    """A project with a lead, three annotators, an outsider and a site admin; see factories.World."""
    from tests import factories  # imported here so pure kernel tests can run without Django

    return factories.make_world()


@pytest.fixture(scope="session")
def redis_server():
    from mriannot.localredis import start_redis

    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def celery_session_app(redis_server):
    from mriannot.celery import app

    # The app reads Django settings with the CELERY_ namespace; finish configuring it first so
    # the updates stick, set both spellings, and drop the result backend it may have cached.
    app.conf.result_backend  # noqa: B018
    for key in ("CELERY_BROKER_URL", "broker_url", "CELERY_RESULT_BACKEND", "result_backend"):
        app.conf[key] = redis_server.url
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    assert app.conf.result_backend == app.conf.broker_url == redis_server.url
    assert redis_server.url.rsplit(":", 1)[-1].split("/")[0] in str(app.backend.connparams.get("port"))
    return app


@pytest.fixture
def celery_worker(celery_session_app, transactional_db):
    """A real Celery worker (in this process, solo pool) on a real Redis, listening on every queue."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_session_app,
        pool="solo",
        perform_ping_check=False,
        queues=["default", "consensus", "training", "export"],
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
