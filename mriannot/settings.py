"""Settings, read from the environment with safe local defaults (see .env.example).

One module for every deployment: a developer's laptop (SQLite, local files, a private
Redis), CI, and production (PostgreSQL through DATABASE_URL, S3-compatible storage,
Celery workers on other machines sharing REDIS_URL).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF, WASM_UNSAFE_EVAL
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
DATA_DIR = Path(os.environ.get("MRIANNOT_DATA_DIR", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string in production, "
            "or set DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-local-development-only-" + "x" * 24

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labeling",
    "consensus",
    "active_learning",
    "frontend",
    "axes",  # log-in lockouts
    "csp",  # Content-Security-Policy
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "mriannot.errors.StorageFaultMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "mriannot.urls"
WSGI_APPLICATION = "mriannot.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# A save waits this long for another writer's lock, then fails (503, "try again") instead of
# hanging the request; a PostgreSQL statement is cancelled after MRIANNOT_DB_STATEMENT_TIMEOUT_S (0: never).
MRIANNOT_DB_LOCK_TIMEOUT_S = float(os.environ.get("MRIANNOT_DB_LOCK_TIMEOUT_S") or 5)
MRIANNOT_DB_STATEMENT_TIMEOUT_S = float(os.environ.get("MRIANNOT_DB_STATEMENT_TIMEOUT_S") or 300)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web server and a Celery worker write to the same file: wait a little for the lock,
    # and use WAL so readers never block the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": MRIANNOT_DB_LOCK_TIMEOUT_S,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
    _pg_options["options"] = (
        _pg_options.get("options", "")
        + f" -c lock_timeout={int(MRIANNOT_DB_LOCK_TIMEOUT_S * 1000)}"
        + f" -c statement_timeout={int(MRIANNOT_DB_STATEMENT_TIMEOUT_S * 1000)}"
    ).strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Passwords set through the admin, the password forms and manage.py (createsuperuser,
# changepassword) must pass these; the demo's users are made in code with the demo password.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("MRIANNOT_PASSWORD_MIN_LENGTH", 12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- log-in: lockout after repeated failures (django-axes), API tokens ---
# The axes backend goes first: it refuses a locked-out (username, address) before the password
# is checked. Every door counts: /api/v1/auth/login/ (the browser's log-in page), /api/v1/auth/token/,
# /admin/login/. A lockout answers 429 and is written to the audit trail (action "auth.lockout").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("MRIANNOT_LOGIN_FAILURE_LIMIT", 5)
_cool_off_minutes = env_int("MRIANNOT_LOGIN_COOLOFF_MINUTES", 15)
# 0: locked until an admin unlocks it (manage.py axes_reset_username <name>).
AXES_COOLOFF_TIME = timedelta(minutes=_cool_off_minutes) if _cool_off_minutes > 0 else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout do not extend it: it ends when the message says it will.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "labeling.authentication.lockout_response"
AXES_CLIENT_IP_CALLABLE = "labeling.authentication.client_ip"
# Reverse proxies in front of the app that append to X-Forwarded-For (0: use the peer address).
MRIANNOT_TRUSTED_PROXIES = env_int("MRIANNOT_TRUSTED_PROXIES", 0)
MRIANNOT_API_TOKEN_TTL_DAYS = env_int("MRIANNOT_API_TOKEN_TTL_DAYS", 30)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [d for d in [BASE_DIR / "frontend" / "dist"] if d.is_dir()]

# --- file storage: a local folder by default, S3-compatible when a bucket is named ---
MEDIA_ROOT = Path(os.environ.get("MRIANNOT_MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "media/"
_S3_BUCKET = os.environ.get("MRIANNOT_S3_BUCKET", "")
if _S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _S3_BUCKET,
            "endpoint_url": os.environ.get("MRIANNOT_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("MRIANNOT_S3_REGION") or None,
            "access_key": os.environ.get("MRIANNOT_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("MRIANNOT_S3_SECRET_ACCESS_KEY") or None,
            "file_overwrite": False,
            "default_acl": None,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- uploads and volume limits ---
MRIANNOT_MAX_UPLOAD_BYTES = env_int("MRIANNOT_MAX_UPLOAD_BYTES", 512 * 1024**2)
MRIANNOT_MAX_DECOMPRESSED_BYTES = env_int("MRIANNOT_MAX_DECOMPRESSED_BYTES", 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = MRIANNOT_MAX_UPLOAD_BYTES
# A .zip of scans (labeling/archives.py): at most this many entries, and this many bytes once
# inflated, all members together (each member also at most MRIANNOT_MAX_UPLOAD_BYTES).
MRIANNOT_MAX_ARCHIVE_MEMBERS = env_int("MRIANNOT_MAX_ARCHIVE_MEMBERS", 500)
MRIANNOT_MAX_ARCHIVE_BYTES = env_int("MRIANNOT_MAX_ARCHIVE_BYTES", 8 * 1024**3)
FILE_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024**2
# Multipart file bytes are counted as they arrive: past MRIANNOT_MAX_UPLOAD_BYTES the upload is
# refused (413), before its body is read when Content-Length says so (labeling/parsers.py).
FILE_UPLOAD_HANDLERS = [
    "labeling.parsers.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# A JSON request body (every JSON endpoint takes a few fields; volumes travel as NIfTI).
MRIANNOT_MAX_JSON_BYTES = env_int("MRIANNOT_MAX_JSON_BYTES", 1024**2)
# Larger uploads are spooled here, under the data folder, where `manage.py files_cleanup` finds
# what a killed process left behind.
FILE_UPLOAD_TEMP_DIR = str(os.environ.get("MRIANNOT_UPLOAD_TEMP_DIR") or DATA_DIR / "upload-tmp")
try:
    os.makedirs(FILE_UPLOAD_TEMP_DIR, exist_ok=True)
except OSError:  # a read-only data folder: uploads then answer 503, the settings still load
    pass

# --- Django REST framework and the OpenAPI schema ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous request then gets 401 with "WWW-Authenticate: Token".
        "labeling.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON with a bounded size and nesting, and only finite numbers (mriannot/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "mriannot.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "mriannot.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "mriannot API",
    "DESCRIPTION": "Brain-MRI segmentation with several blinded raters, STAPLE consensus, "
    "inter-rater agreement and active learning.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # A PATCH body is documented as its serializer requires it (the views mark optional fields).
    "COMPONENT_SPLIT_PATCH": False,
    # <id:...> in paths (mriannot/converters.py): 1 to 2**63 - 1 (mriannot.fields.MAX_ID).
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
    # Swagger UI assets ship inside drf-spectacular-sidecar: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AssignmentStatusEnum": "labeling.models.AssignmentStatus",
        "ScanStatusEnum": "labeling.models.ScanStatus",
        "RunStatusEnum": "mriannot.jobs.JobStatus",
        "SequenceEnum": "labeling.metadata.SEQUENCES",
        "MemberRoleEnum": "labeling.models.Role",
    },
    # Every operation documents its 4xx answers: the one error shape of mriannot/errors.py.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "mriannot.schema.error_responses"],
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Celery (Redis broker); queues split by kind so workers can be scaled per kind ---
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Every queue is declared, so a worker started without -Q consumes them all; -Q still splits
# them between workers (README, "Running at scale").
MRIANNOT_QUEUES = ("default", "consensus", "training", "export")
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in MRIANNOT_QUEUES]
CELERY_TASK_ROUTES = {  # first match wins
    "consensus.tasks.export_*": {"queue": "export"},
    "consensus.tasks.*": {"queue": "consensus"},
    "active_learning.tasks.*": {"queue": "training"},
}
# A request that queues work must not hang when Redis is down: connecting gives up after
# this long, and mriannot.queue.task_send publishes without retries (the row stays queued
# and the periodic requeue sends it). Workers reconnect on their own, without limit.
MRIANNOT_BROKER_CONNECT_TIMEOUT_S = float(os.environ.get("MRIANNOT_BROKER_CONNECT_TIMEOUT_S") or 2)
CELERY_BROKER_CONNECTION_TIMEOUT = MRIANNOT_BROKER_CONNECT_TIMEOUT_S
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 4 * 3600,
    "socket_connect_timeout": MRIANNOT_BROKER_CONNECT_TIMEOUT_S,
    "socket_timeout": 10,  # above the 1 s BRPOP of an idle worker
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = MRIANNOT_BROKER_CONNECT_TIMEOUT_S
CELERY_REDIS_SOCKET_TIMEOUT = 10

# --- Job leases (mriannot/jobs.py) and the worker watch (mriannot/celery.py) ---
# A running job's worker writes a heartbeat this often; a job without one for the lease
# (three heartbeats; a kind may set its own) is presumed lost and sent again.
MRIANNOT_JOB_HEARTBEAT_S = float(os.environ.get("MRIANNOT_JOB_HEARTBEAT_S") or 30)
MRIANNOT_JOB_HEARTBEAT_LEASE_S = float(os.environ.get("MRIANNOT_JOB_HEARTBEAT_LEASE_S") or 3 * MRIANNOT_JOB_HEARTBEAT_S)
# A queued job whose message did not reach the broker this long after it was queued is sent again.
MRIANNOT_JOB_SEND_GRACE_S = float(os.environ.get("MRIANNOT_JOB_SEND_GRACE_S") or 30)
# Pages say a job "waits for a worker" when it has been queued longer than this.
MRIANNOT_JOB_WAITING_S = float(os.environ.get("MRIANNOT_JOB_WAITING_S") or 30)
# Every worker checks for lost jobs this often (one of them at a time; 0: never).
MRIANNOT_JOBS_REQUEUE_EVERY_S = float(os.environ.get("MRIANNOT_JOBS_REQUEUE_EVERY_S") or 60)
# The queue-health endpoint asks Redis for the workers at most this often.
MRIANNOT_QUEUE_HEALTH_CACHE_S = float(os.environ.get("MRIANNOT_QUEUE_HEALTH_CACHE_S") or 10)

# --- Content-Security-Policy (django-csp) and the other security headers ---
# Pages load only their own scripts and styles: no inline script anywhere (the API docs use
# drf-spectacular's split Swagger view), the few inline <style> blocks carry a per-request
# nonce. NiiVue draws with WebGL2, makes images from data: and blob: URLs, and may compile the
# WebAssembly decoders bundled with it ('wasm-unsafe-eval' allows WebAssembly, not JS eval).
# SecurityMiddleware adds X-Content-Type-Options: nosniff and Referrer-Policy: same-origin;
# XFrameOptionsMiddleware adds X-Frame-Options: DENY.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, WASM_UNSAFE_EVAL],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF, "data:", "blob:"],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- production hardening (manage.py check --deploy passes when DJANGO_DEBUG is off) ---
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

MRIANNOT_CODE_VERSION = os.environ.get("MRIANNOT_CODE_VERSION", "")
