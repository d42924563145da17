"""Every list endpoint is paged, and its SQL query count does not grow with the project (issue 17).

The project is grown with bench/bench_scale.py's bulk loader (the same invariants as the
services: 3 distinct raters per scan, revisions, consensus runs with rater performances,
ground truths, scores, audit events) to two sizes; each list answers the same number of
queries at both, and no more than a small bound, and at most a page of items.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from mriannot.paging import PAGE_DEFAULT, PAGE_MAX
from tests.bench import load_bench


def _bench():
    return load_bench("bench_scale")


@pytest.fixture
def grown(db):
    bench = _bench()
    base = bench.make_base(n_annotators=6)
    return bench, base


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _lists(base) -> list[tuple[str, object, str]]:
    p = base["project"].pk
    lead, rater = base["lead"], base["annotators"][0]
    return [
        ("assignments", lead, f"/api/v1/assignments/?project={p}"),
        ("worklist", rater, "/api/v1/me/worklist/"),
        ("scans", lead, f"/api/v1/projects/{p}/scans/"),
        ("flagged", lead, f"/api/v1/projects/{p}/flagged-scans/"),
        ("audit", lead, f"/api/v1/projects/{p}/audit/"),
        ("ranking", lead, f"/api/v1/projects/{p}/ranking/"),
        ("models", lead, f"/api/v1/projects/{p}/models/"),
        ("members", lead, f"/api/v1/projects/{p}/members/"),
        ("projects", lead, "/api/v1/projects/"),
        ("exports", lead, f"/api/v1/projects/{p}/exports/"),
    ]


def _count(user, path) -> tuple[int, object]:
    client = _client(user)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content[:300]
    return len(captured.captured_queries), response


def test_list_queries_do_not_grow_with_the_project(grown):
    bench, base = grown
    bench.grow_project(base=base, n_scans=20)
    small = {name: _count(user, path)[0] for name, user, path in _lists(base)}
    bench.grow_project(base=base, n_scans=200)
    for name, user, path in _lists(base):
        queries, response = _count(user, path)
        assert queries == small[name], f"{name}: {small[name]} queries at 20 scans, {queries} at 200"
        assert queries <= 12, f"{name}: {queries} queries"
        items = response.json()["scans"] if name == "ranking" else response.json()
        assert len(items) <= PAGE_DEFAULT, name
    # before paging and the bulk reads, the assignment list made one query per assignment
    queries, response = _count(base["lead"], f"/api/v1/assignments/?project={base['project'].pk}&limit={PAGE_MAX}")
    assert len(response.json()) == PAGE_MAX < 3 * 200 and queries == small["assignments"]


def test_a_page_walk_lists_every_item_once(grown):
    bench, base = grown
    bench.grow_project(base=base, n_scans=45)
    client = _client(base["lead"])
    path = f"/api/v1/assignments/?project={base['project'].pk}&limit=20"
    seen, pages = [], 0
    while path:
        response = client.get(path)
        assert response.status_code == 200
        assert response["X-Total-Count"] == str(3 * 45)  # 45 scans, the template scan among them
        seen += [row["id"] for row in response.json()]
        pages += 1
        link = response.get("Link", "")
        path = next((part.split(";")[0].strip("<> ") for part in link.split(",") if 'rel="next"' in part), None)
    assert pages == 7 and len(seen) == len(set(seen)) == 3 * 45
    # what each row says is what the unpaged reads say
    from labeling import selectors
    from labeling.models import Assignment

    row = client.get(f"/api/v1/assignments/?project={base['project'].pk}&limit=500").json()
    heads = {a["id"]: a["head_revision"] for a in row}
    for assignment in Assignment.objects.filter(scan__project=base["project"]).order_by("id")[:30]:
        head = selectors.assignment_head(assignment=assignment)
        assert heads[assignment.pk] == (head.pk if head else None)


def test_ranking_and_flagged_pages_keep_their_order(grown):
    bench, base = grown
    bench.grow_project(base=base, n_scans=60)
    from active_learning import selectors as al_selectors
    from consensus import selectors as consensus_selectors

    client = _client(base["lead"])
    p = base["project"]
    _model, every = al_selectors.ranking(project=p)
    paged = []
    for offset in range(0, len(every), 7):
        response = client.get(f"/api/v1/projects/{p.pk}/ranking/?limit=7&offset={offset}")
        assert response["X-Total-Count"] == str(len(every))
        paged += response.json()["scans"]
    assert [r["scan"] for r in paged] == [r["scan"] for r in every]
    scores = [r["score"] for r in paged if r["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    flagged = [scan.pk for scan, _run in consensus_selectors.flagged_scans(project=p)]
    response = client.get(f"/api/v1/projects/{p.pk}/flagged-scans/?limit=500")
    rows = response.json()
    assert [r["id"] for r in rows] == flagged
    ambiguity = [r["ambiguity"] or 0.0 for r in rows]
    assert ambiguity == sorted(ambiguity, reverse=True)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "offset=-1", "offset=99999999999999999999"])
def test_bad_paging_is_a_clear_400(grown, query):
    _bench, base = grown
    response = _client(base["lead"]).get(f"/api/v1/assignments/?project={base['project'].pk}&{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] and ("limit" in str(body) or "offset" in str(body))


def test_the_agreement_dashboard_queries_do_not_grow_with_the_project(grown):
    """The dashboard sums the agreement rows in the database: the same number of queries at 20 and
    200 scans, at most a page of scans in the answer, every pair in the streamed CSV."""
    import csv
    import io

    from consensus.models import AgreementPair
    from consensus.selectors import AGREEMENT_SCANS_SHOWN

    bench, base = grown
    lead, project = base["lead"], base["project"]
    path = f"/api/v1/projects/{project.pk}/agreement/"

    def streamed_pairs() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as captured:
            response = _client(lead).get(path + "?table=pairs")
            rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        return len(captured.captured_queries), rows

    bench.grow_project(base=base, n_scans=20)
    small, _response = _count(lead, path)
    small_csv, _rows = streamed_pairs()
    bench.grow_project(base=base, n_scans=200)
    queries, response = _count(lead, path)
    assert queries == small and queries <= 16, f"{small} queries at 20 scans, {queries} at 200"
    data = response.json()
    assert "pairs" not in data and len(data["scans"]) <= AGREEMENT_SCANS_SHOWN
    assert data["totals"]["pairs"] == AgreementPair.objects.filter(project=project, current=True).count() > 200
    csv_queries, rows = streamed_pairs()
    assert len(rows) == data["totals"]["pairs"] and csv_queries == small_csv


def test_the_agreement_tables_follow_every_change(grown):
    """Nothing is cached: a change the tables depend on (scan metadata, a new consensus run) is in
    the next answer."""
    bench, base = grown
    bench.grow_project(base=base, n_scans=30)
    from labeling import services
    from labeling.models import Scan, ScanStatus

    lead, project = base["lead"], base["project"]
    path = f"/api/v1/projects/{project.pk}/agreement/"
    _queries, first = _count(lead, path)

    scan = Scan.objects.filter(project=project, status=ScanStatus.GROUND_TRUTH).order_by("id").first()
    services.scan_update(scan=scan, actor=lead, metadata={"site": "SITE-Z"})
    _queries, after = _count(lead, path)
    sites = {r["group"] for r in after.json()["by_metadata"] if r["column"] == "site"}
    assert "SITE-Z" in sites and sites != {r["group"] for r in first.json()["by_metadata"] if r["column"] == "site"}

    before_runs = {row["scan"] for row in after.json()["scans"]}
    bench.grow_project(base=base, n_scans=50)  # more scans with finished consensus runs
    _queries, grown_more = _count(lead, path)
    assert {row["scan"] for row in grown_more.json()["scans"]} > before_runs
    assert grown_more.json()["totals"]["scans"] > after.json()["totals"]["scans"]
