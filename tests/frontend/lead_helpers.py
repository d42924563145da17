"""Projects with real consensus runs for the lead pages' browser tests (dashboard, review, exports).

Small volumes (24x20x16, the phantom of tests.factories.sphere_truth) and the consensus runs
executed synchronously here, so a test starts with finished runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from consensus import services as consensus_services
from consensus.models import ConsensusRun
from labeling.models import Project
from tests import factories

SHAPE = (24, 20, 16)
QUEUES = ("default", "consensus", "training", "export")


def rated_project(
    *, n_raters: int = 4, n_scans: int = 3, drifting: str | None = "rater4", ambiguity_threshold: float | None = None
) -> factories.World:
    """``n_raters`` raters rate every one of ``n_scans`` scans; ``drifting`` labels far less than the
    others (an eroded phantom); the others differ by a little noise that grows with the scan.
    Every scan's consensus is run (STAPLE, default options). The project is marked simulated."""
    world = factories.make_world(raters_per_scan=n_raters, n_annotators=n_raters)
    updates = {"is_simulated": True}
    if ambiguity_threshold is not None:
        updates["ambiguity_threshold"] = ambiguity_threshold
    Project.objects.filter(pk=world.project.pk).update(**updates)
    world.project.refresh_from_db()
    truth = factories.sphere_truth(SHAPE)
    eroded = np.where(ndimage.binary_erosion(truth > 0, iterations=3), truth, 0).astype(np.uint8)
    rng = np.random.default_rng(11)
    for seed in range(n_scans):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE, subject_id=f"sub-{seed + 1:02d}")
        maps = []
        for assignment in scan.assignments.order_by("id"):
            if assignment.annotator.username == drifting:
                labels = eroded.copy()
            else:
                labels = truth.copy()
                flip = rng.random(SHAPE) < 0.01 * (seed + 1)
                labels[flip & (truth > 0)] = 0
            maps.append(labels)
        factories.submit_panel(world, scan, maps)
    for run in ConsensusRun.objects.filter(scan__project=world.project).order_by("id"):
        consensus_services.consensus_run_execute(run_id=run.pk)
    return world


def purge_queues(app) -> None:
    """Drop every message waiting in the broker: tasks queued by earlier tests name rows that are gone."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue that was never declared has nothing to purge
                pass


def record_text(page, element_id: str) -> None:
    """Record every text the element shows in ``window.progressSeen`` (a progress line's steps)."""
    page.evaluate(
        """(id) => {
          window.progressSeen = [];
          new MutationObserver(() => window.progressSeen.push(document.getElementById(id).textContent))
            .observe(document.getElementById(id), { childList: true, characterData: true, subtree: true });
        }""",
        element_id,
    )
