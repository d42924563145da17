"""The Celery application: Redis broker and result backend from REDIS_URL."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mriannot.settings")

app = Celery("mriannot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
