"""Settings for the test suite: production settings, with local secrets and a throwaway data folder."""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("MRIANNOT_DATA_DIR", tempfile.mkdtemp(prefix="mriannot-test-"))
os.environ.setdefault("DATABASE_URL", "sqlite:///" + os.path.join(os.environ["MRIANNOT_DATA_DIR"], "db.sqlite3"))

from .settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
STATIC_ROOT = os.path.join(os.environ["MRIANNOT_DATA_DIR"], "static")
os.makedirs(STATIC_ROOT, exist_ok=True)
# A file, not the in-memory default: the in-process Celery worker and the live server run in
# other threads, and shared-cache in-memory SQLite answers "table is locked" instead of waiting.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["MRIANNOT_DATA_DIR"], "test.sqlite3")}  # noqa: F405
