"""The dashboard in headless Chromium says which queue has no worker, and that a queued training
waits for a worker (mriannot/queue.py, frontend/src/js/queues.js, poll.js)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from active_learning.models import ModelVersion
from mriannot import queue
from tests import factories
from tests.frontend.helpers import log_in

pytestmark = pytest.mark.browser


@pytest.fixture
def waiting_training(transactional_db, local_queue, settings):
    """A project whose training has waited two minutes; the only worker does not consume 'training'."""
    settings.MRIANNOT_QUEUE_HEALTH_CACHE_S = 0
    client = queue.broker_redis()
    for key in client.scan_iter(match="mriannot:*"):
        client.delete(key)
    world = factories.make_world()
    version = ModelVersion.objects.create(project=world.project, version=1, requested_by=world.lead)
    ModelVersion.objects.filter(pk=version.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    queue.worker_announce(hostname="w1@box", queues=["default", "consensus", "export"])
    yield world
    client.delete(queue.WORKER_KEY + "w1@box")


def test_the_dashboard_names_the_queue_without_a_worker_and_the_waiting_training(
    live_server, page, waiting_training, shot
):
    world = waiting_training
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    page.goto(f"{live_server.url}/dashboard/{world.project.pk}/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")

    assert page.is_visible("#queue-card") and page.get_attribute("#queue-card", "data-problems") == "1"
    alert = page.inner_text("#queue-alert")
    assert "No worker consumes the “training” queue: 1 job waiting (the oldest for 2 min)" in alert
    assert page.get_attribute("#queues-body tr[data-queue=training]", "data-state") == "no worker"
    assert page.get_attribute("#queues-body tr[data-queue=consensus]", "data-state") == "served"
    assert "w1@box" in page.inner_text("#queues-body tr[data-queue=consensus]")

    # The training the card follows says why nothing moves.
    page.wait_for_selector("#train-progress[data-waiting=true]")
    assert "waits for a worker (queued 2 min)" in page.inner_text("#train-text")
    shot(page, "queue-without-worker")
