"""The agreement dashboard's aggregates (rows written as each consensus run finishes, summed in
the database) say what the full computation from every run's report says, follow a rerun of a
scan, and are backfilled for runs that finished before them."""

from __future__ import annotations

import csv
import importlib
import io

import numpy as np
import pytest
from django.apps import apps

from consensus import selectors, services
from consensus.models import AgreementLabel, AgreementPair, AgreementRaterScore, AgreementRun, ConsensusRun, Method
from consensus.services import runs as run_services
from labeling.models import Scan
from mriannot.jobs import JobStatus
from tests import factories
from tests.consensus.agreement_oracle import project_agreement_compute

pytestmark = pytest.mark.django_db

SHAPE = (12, 10, 8)
TABLES = ("labels", "per_label", "per_rater", "rater_matrix", "over_time", "by_metadata", "rater_flag_rule")


@pytest.fixture
def rerun_world(db):
    """Three raters on three scans (two sites), every scan fused once with STAPLE; then scan 0 is
    fused again by majority vote, so it has two finished runs and the newer one counts."""
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    rng = np.random.default_rng(3)
    truth = factories.label_array(SHAPE)
    for seed, site in enumerate(("SITE-A", "SITE-A", "SITE-B")):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE)
        Scan.objects.filter(pk=scan.pk).update(site=site, field_strength=3.0 if seed else 1.5)
        maps = []
        for _ in range(3):
            labels = truth.copy()
            labels[(rng.random(SHAPE) < 0.15) & (truth > 0)] = 0
            maps.append(labels)
        factories.submit_panel(world, scan, maps)
    for run in ConsensusRun.objects.order_by("id"):
        services.consensus_run_execute(run_id=run.pk)
    first = Scan.objects.filter(project=world.project).order_by("id").first()
    rerun, queued = services.consensus_run_request(scan=first, actor=world.lead, method=Method.MAJORITY_VOTE)
    assert queued
    rerun = services.consensus_run_execute(run_id=rerun.pk)
    assert rerun.status == JobStatus.DONE
    return world, first, rerun


def _csv(response) -> list[dict]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.DictReader(io.StringIO(body.decode())))


def _same(ours, oracle) -> None:
    """Equal, floats to 1e-9 (the database sums in another order)."""
    if isinstance(oracle, dict):
        assert set(ours) == set(oracle), (sorted(ours), sorted(oracle))
        for key in oracle:
            _same(ours[key], oracle[key])
    elif isinstance(oracle, list):
        assert len(ours) == len(oracle)
        for a, b in zip(ours, oracle, strict=True):
            _same(a, b)
    elif isinstance(oracle, float) and not isinstance(ours, bool):
        assert ours == pytest.approx(oracle, rel=1e-9, abs=1e-12)
    else:
        assert ours == oracle


def test_the_aggregates_equal_the_full_computation(rerun_world):
    world, _first, _rerun = rerun_world
    project = world.project
    assert ConsensusRun.objects.filter(status=JobStatus.DONE).count() == 4  # scan 0 has two
    ours = selectors.project_agreement(project=project)
    oracle = project_agreement_compute(project=project)
    for table in TABLES:
        _same(ours[table], oracle[table])
    _same(ours["scans"], oracle["scans"])  # three scans: all shown, least agreed first
    dice = [p["dice"] for p in oracle["pairs"] if p["dice"] is not None]
    assert ours["totals"] == {
        "scans": 3,
        "pairs": len(oracle["pairs"]),
        "mean_pairwise_dice": pytest.approx(sum(dice) / len(dice)),
    }
    assert len(oracle["pairs"]) == 3 * 3 * 3  # scans x labels x rater pairs: the old run is not counted
    # the streamed tables are the oracle's, row for row
    client = world.client(world.lead)
    path = f"/api/v1/projects/{project.pk}/agreement/"
    pairs = _csv(client.get(path + "?table=pairs"))
    key = lambda r: (int(r["scan"]), int(r["label"]), r["rater_a"], r["rater_b"])  # noqa: E731
    expected = sorted(oracle["pairs"], key=lambda r: (r["scan"], r["label"], r["rater_a"], r["rater_b"]))
    assert len(pairs) == len(expected)
    for got, want in zip(sorted(pairs, key=key), expected, strict=True):
        assert (int(got["run"]), got["date"], got["label_name"], got["subject_id"]) == (
            want["run"],
            want["date"],
            want["label_name"],
            want["subject_id"],
        )
        for figure in ("dice", "jaccard", "hausdorff95", "assd", "surface_dice"):
            assert (float(got[figure]) if got[figure] else None) == pytest.approx(want[figure])
    scans = _csv(client.get(path + "?table=scans"))
    assert [int(r["scan"]) for r in scans] == [r["scan"] for r in oracle["scans"]]
    assert [r["flag_reasons"] for r in scans] == [r["flag_reasons"] for r in oracle["scans"]]
    for table in ("per_label", "per_rater", "rater_matrix", "over_time", "by_metadata"):
        assert len(_csv(client.get(f"{path}?table={table}"))) == len(oracle[table]), table
    # the JSON holds the least agreed scans only, and counts them all
    shown = selectors.project_agreement(project=project, scans_shown=2)
    assert [r["scan"] for r in shown["scans"]] == [r["scan"] for r in oracle["scans"][:2]]
    assert shown["scans_shown"] == 2 and shown["totals"]["scans"] == 3


def test_a_rerun_replaces_the_scans_rows_in_the_aggregates(rerun_world):
    world, first, rerun = rerun_world
    old = ConsensusRun.objects.filter(scan=first, status=JobStatus.DONE).exclude(pk=rerun.pk).get()
    for model in (AgreementRun, AgreementLabel, AgreementPair, AgreementRaterScore):
        assert model.objects.filter(run=old).exists() and not model.objects.filter(run=old, current=True).exists()
        assert not model.objects.filter(run=rerun, current=False).exists()
        assert model.objects.filter(run=rerun).exists()
    data = selectors.project_agreement(project=world.project)
    row = next(r for r in data["scans"] if r["scan"] == first.pk)
    assert row["run"] == rerun.pk
    assert all(r["scans"] == 3 for r in data["per_rater"])  # each rater once per scan, not 4 runs

    # Writing a run's rows again (a retried task) replaces them; an older run finishing later
    # would be the newest, and the dashboard follows it.
    n = AgreementPair.objects.filter(run=rerun).count()
    perfs = [(p.annotator_id, p.dice, p.sensitivity, p.specificity) for p in rerun.performances.all()]
    raters = [p[0] for p in perfs]
    run_services.agreement_rows_write(run=ConsensusRun.objects.get(pk=rerun.pk), rater_ids=raters, performances=perfs)
    assert AgreementPair.objects.filter(run=rerun).count() == n
    assert AgreementRun.objects.filter(scan=first, current=True).get().run_id == rerun.pk
    ConsensusRun.objects.filter(pk=old.pk).update(finished_at=rerun.finished_at + (rerun.finished_at - old.finished_at))
    run_services.agreement_current_refresh(scan_id=first.pk)
    assert AgreementRun.objects.filter(scan=first, current=True).get().run_id == old.pk
    _same(
        selectors.project_agreement(project=world.project)["per_label"],
        project_agreement_compute(project=world.project)["per_label"],
    )


def test_the_migration_backfills_rows_for_runs_finished_before_it(rerun_world):
    world, first, rerun = rerun_world
    before = selectors.project_agreement(project=world.project)
    counts = {m: m.objects.count() for m in (AgreementRun, AgreementLabel, AgreementPair, AgreementRaterScore)}
    for model in counts:
        model.objects.all().delete()
    assert selectors.project_agreement(project=world.project)["totals"]["scans"] == 0
    migration = importlib.import_module("consensus.migrations.0008_agreement_aggregates")
    migration.backfill(apps, None)
    assert {m: m.objects.count() for m in counts} == counts
    assert AgreementRun.objects.filter(scan=first, current=True).get().run_id == rerun.pk
    _same(selectors.project_agreement(project=world.project), before)
