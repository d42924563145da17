"""Project agreement tables: per label, per rater (with the drift flag), pairwise, over time, CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy import ndimage

from consensus import services
from consensus.models import ConsensusRun
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_project(db):
    """Four raters on three scans (3 per scan); 'rater4' is far worse than the others everywhere."""
    world = factories.make_world(raters_per_scan=4, n_annotators=4)
    truth = factories.sphere_truth((24, 20, 16))
    rng = np.random.default_rng(7)
    for seed in range(3):
        scan = factories.add_scan(world, seed=seed, shape=(24, 20, 16))
        maps = []
        for assignment in scan.assignments.order_by("id"):
            labels = truth.copy()
            if assignment.annotator.username == "rater4":
                labels = np.where(ndimage.binary_erosion(truth > 0, iterations=3), truth, 0).astype(np.uint8)
            else:
                flip = rng.random(truth.shape) < 0.01
                labels[flip & (truth > 0)] = 0
            maps.append(labels)
        factories.submit_panel(world, scan, maps)
    for run in ConsensusRun.objects.all():
        services.consensus_run_execute(run_id=run.pk)
    return world


def test_tables_cover_every_scan_label_and_rater(rated_project):
    world = rated_project
    data = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/agreement/").json()
    assert len(data["scans"]) == 3
    assert [row["label"] for row in data["per_label"]] == [1, 2, 3]
    assert data["totals"]["pairs"] == 3 * 3 * 6  # scans x labels x C(4, 2)
    assert data["totals"]["scans"] == data["scans_shown"] == 3
    assert {row["rater"] for row in data["per_rater"]} == {"rater1", "rater2", "rater3", "rater4"}
    assert len(data["rater_matrix"]) == 6
    assert {row["label"] for row in data["over_time"]} == {1, 2, 3}
    # least-agreed scans come first
    dice = [row["mean_pairwise_dice"] for row in data["scans"]]
    assert dice == sorted(dice)


def test_the_drifting_rater_is_flagged_and_no_one_else(rated_project):
    world = rated_project
    data = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/agreement/").json()
    flagged = {row["rater"] for row in data["per_rater"] if row["flagged"]}
    assert flagged == {"rater4"}
    worst = min(data["per_rater"], key=lambda row: row["mean_dice_vs_consensus"])
    assert worst["rater"] == "rater4" and worst["below_median_by"] > 0.05


def test_every_table_downloads_as_csv(rated_project):
    world = rated_project
    client = world.client(world.lead)
    for table in ("scans", "pairs", "per_label", "per_rater", "rater_matrix", "over_time", "by_metadata"):
        response = client.get(f"/api/v1/projects/{world.project.pk}/agreement/?table={table}")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert rows, table
    pairs = client.get(f"/api/v1/projects/{world.project.pk}/agreement/?table=pairs")
    assert len(list(csv.DictReader(io.StringIO(b"".join(pairs.streaming_content).decode())))) == 3 * 3 * 6
    bad = client.get(f"/api/v1/projects/{world.project.pk}/agreement/?table=everything")
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_table"


def test_annotators_cannot_see_agreement(rated_project):
    world = rated_project
    for user in world.annotators:
        assert world.client(user).get(f"/api/v1/projects/{world.project.pk}/agreement/").status_code == 403
    assert world.client(world.outsider).get(f"/api/v1/projects/{world.project.pk}/agreement/").status_code == 404
