"""Agreement broken down by scan metadata: mean pairwise rater Dice per label for each group of
each metadata column, with n per group, on panels whose Dice is known by hand."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from consensus import services
from consensus.models import ConsensusRun
from labeling.models import Scan
from tests import factories

pytestmark = pytest.mark.django_db

SHAPE = (12, 10, 8)


def _box(n_voxels: int) -> np.ndarray:
    """Label 1 on the first ``n_voxels`` of a 2x2x2 box (8 voxels), in a fixed order."""
    labels = np.zeros(SHAPE, np.uint8)
    box = [(x, y, z) for x in (4, 5) for y in (4, 5) for z in (3, 4)]
    for voxel in box[:n_voxels]:
        labels[voxel] = 1
    return labels


@pytest.fixture
def world_by_site(db):
    """Two raters; scans 1 and 2 (SITE-A) drawn identically (Dice 1), scan 3 (SITE-B) one rater
    drew 4 of the other's 8 voxels: Dice 2*4 / (8 + 4) = 2/3. Field strength 3, 1.5, 3 T."""
    world = factories.make_world(raters_per_scan=2, n_annotators=2)
    metadata = [("SITE-A", 3.0, 8), ("SITE-A", 1.5, 8), ("SITE-B", 3.0, 4)]
    for seed, (site, tesla, second) in enumerate(metadata):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE)
        Scan.objects.filter(pk=scan.pk).update(site=site, field_strength=tesla)
        factories.submit_panel(world, scan, [_box(8), _box(second)])
    for run in ConsensusRun.objects.all():
        services.consensus_run_execute(run_id=run.pk)
    return world


def _rows(data, column, label=1):
    return [
        (r["group"], r["scans"], r["pairs"], round(r["mean_dice"], 4))
        for r in data["by_metadata"]
        if r["column"] == column and r["label"] == label
    ]


def test_agreement_is_broken_down_by_each_metadata_column_with_n(world_by_site):
    world = world_by_site
    data = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/agreement/").json()
    assert _rows(data, "site") == [("SITE-A", 2, 2, 1.0), ("SITE-B", 1, 1, round(2 / 3, 4))]
    assert _rows(data, "field_strength") == [("1.5 T", 1, 1, 1.0), ("3 T", 2, 2, round((1 + 2 / 3) / 2, 4))]
    # A column nobody filled in: one group, every scan.
    assert _rows(data, "sex") == [("not recorded", 3, 3, round((1 + 1 + 2 / 3) / 3, 4))]
    assert {r["column"] for r in data["by_metadata"]} == {
        "site",
        "scanner",
        "field_strength",
        "sequence",
        "sex",
        "age_band",
    }
    assert all(r["label_name"] == "CSF" for r in data["by_metadata"] if r["label"] == 1)


def test_the_breakdown_agrees_with_the_pairs_table_and_downloads_as_csv(world_by_site):
    world = world_by_site
    client = world.client(world.lead)
    data = client.get(f"/api/v1/projects/{world.project.pk}/agreement/").json()
    site = dict(Scan.objects.values_list("id", "site"))
    streamed = client.get(f"/api/v1/projects/{world.project.pk}/agreement/?table=pairs")
    pairs = list(csv.DictReader(io.StringIO(b"".join(streamed.streaming_content).decode())))
    for row in (r for r in data["by_metadata"] if r["column"] == "site"):
        dice = [
            float(p["dice"])
            for p in pairs
            if site[int(p["scan"])] == row["group"] and int(p["label"]) == row["label"] and p["dice"] != ""
        ]
        assert row["pairs"] == len(dice) and row["mean_dice"] == pytest.approx(np.mean(dice))
    response = client.get(f"/api/v1/projects/{world.project.pk}/agreement/?table=by_metadata")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == len(data["by_metadata"])
    assert {"column", "group", "label", "label_name", "scans", "pairs", "mean_dice"} <= set(rows[0])
