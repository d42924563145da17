"""Shared fixtures: users and projects, tiny NIfTI volumes, a real Redis and Celery worker."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

#: The scaled layout (scripts/test_scaled.sh): files in an S3 bucket, two workers on separate queues.
S3_LAYOUT = bool(os.environ.get("MRIANNOT_S3_BUCKET"))


class S3Folder:
    """A test's own prefix in the S3 bucket, standing in for its media folder."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def files(self) -> list[str]:
        from django.core.files.storage import default_storage

        client = default_storage.connection.meta.client
        names = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=default_storage.bucket_name, Prefix=self.prefix + "/"
        ):
            names += [item["Key"][len(self.prefix) + 1 :] for item in page.get("Contents", [])]
        return sorted(names)


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path):
    """Every test writes files into its own folder (its own prefix of the bucket on the scaled
    layout), so 'nothing was stored' can be checked."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield None  # pure kernel tests run with -p no:django
        return
    settings = request.getfixturevalue("settings")
    if S3_LAYOUT:
        # The same storage (and its S3 connection: making one costs a second) under a prefix of
        # the test's own; S3Storage puts ``location`` before every name. Set here rather than
        # with the test's monkeypatch, which some tests undo.
        from django.core.files.storage import storages

        storage = storages["default"]
        previous, storage.location = storage.location, f"tests/{uuid.uuid4().hex}"
        yield S3Folder(storage.location)
        storage.location = previous
        return
    media = tmp_path / "media"
    media.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    settings.MEDIA_ROOT = str(media)
    yield media


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
    if isinstance(_media_root, S3Folder):
        return _media_root.files
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


def _polling_work_controller():
    from celery.contrib.testing.worker import TestWorkController

    class PollingWorkController(TestWorkController):
        """A test worker without the event loop: it drains Redis itself (Celery's ``synloop``)."""

        def should_use_eventloop(self):
            return False

    return PollingWorkController


@pytest.fixture
def celery_worker(celery_session_app, transactional_db):
    """A real Celery worker (in this process, solo pool) on a real Redis, listening on every queue;
    on the scaled layout two workers, on separate queues (consensus and default; export and
    training), as a site would split them."""
    from celery.contrib.testing.worker import start_worker

    if not S3_LAYOUT:
        with start_worker(
            celery_session_app,
            pool="solo",
            perform_ping_check=False,
            queues=["default", "consensus", "training", "export"],
            shutdown_timeout=30,
        ) as worker:
            yield worker
        return
    # Two workers in one process must not share kombu's event loop (a module-level hub: one
    # worker's shutdown or start closes the other's epoll); each polls Redis on its own instead.
    options = {
        "pool": "solo",
        "perform_ping_check": False,
        "shutdown_timeout": 30,
        "WorkController": _polling_work_controller(),
    }
    with (
        start_worker(
            celery_session_app, queues=["consensus", "default"], hostname="consensus@test", **options
        ) as worker,
        start_worker(celery_session_app, queues=["export", "training"], hostname="export@test", **options),
    ):
        yield worker


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
