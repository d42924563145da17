"""The agreement dashboard in headless Chromium: plots drawn from real consensus runs, the
flagged rater, the least-agreed scans, the CSV downloads; annotators see no agreement figure."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client

from tests import factories
from tests.frontend.conftest import SCREENSHOTS
from tests.frontend.helpers import log_in
from tests.frontend.lead_helpers import rated_project

pytestmark = pytest.mark.browser


@pytest.fixture
def lead_world(transactional_db, local_queue):
    """Four raters on three scans, rater4 drifting; consensus run on every scan."""
    return rated_project()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/dashboard/", "/dashboard/12345/", "/review/12345/", "/exports/12345/"])
def test_lead_pages_are_served_from_the_build(url, frontend_dist, settings):
    settings.MRIANNOT_FRONTEND_DIST = frontend_dist
    response = Client().get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module"' in html and "/static/assets/" in html
    assert "csrftoken" in response.cookies and response["Cache-Control"] == "no-cache"


def open_dashboard(page, base_url: str, project_id: int) -> str:
    page.goto(f"{base_url}/dashboard/{project_id}/")
    page.wait_for_selector("body[data-ready]")
    return page.evaluate("document.body.dataset.ready")


def chart_data(page, name: str) -> dict:
    """What a Chart.js chart of the page draws: categories, series, axis titles, printed labels."""
    return page.evaluate(
        """(name) => {
          const chart = window.mriannot.charts[name];
          return {
            categories: chart.data.labels,
            series: chart.data.datasets.map((d, i) => ({
              name: d.label, values: d.data, drawn: chart.getDatasetMeta(i).data.length,
            })),
            xTitle: chart.options.scales.x.title.text,
            yTitle: chart.options.scales.y.title.text,
            datalabels: chart.options.plugins.datalabels.display !== false,
            legend: chart.options.plugins.legend.display !== false,
            width: chart.width,
            height: chart.height,
          };
        }""",
        name,
    )


def test_dashboard_draws_its_plots_from_real_data(live_server, page, lead_world, shot):
    world = lead_world
    project = world.project
    expected = world.client(world.lead).get(f"/api/v1/projects/{project.pk}/agreement/").json()
    log_in(page, live_server.url, "lead", factories.PASSWORD)  # a lead who rates nothing lands on the project home
    page.goto(f"{live_server.url}/")
    page.wait_for_selector("#dashboard-link", state="visible")  # the worklist links leads to their dashboards
    assert page.get_attribute("#dashboard-link", "href") == "/dashboard/"
    assert open_dashboard(page, live_server.url, project.pk) == "true", page.inner_text("#page-error")
    assert page.is_visible("#simulated-notice")

    # The drifting rater is flagged, prominently, and nobody else.
    flagged = page.locator("#flagged-raters li")
    assert flagged.count() == 1 and flagged.first.get_attribute("data-rater") == "rater4"
    assert "rater4" in flagged.first.inner_text() and "below the project median" in flagged.first.inner_text()
    assert "has-flags" in page.get_attribute("#rater-flags", "class")

    # Heat map: one cell per rater pair, with the server's mean Dice printed in it.
    raters = ["rater1", "rater2", "rater3", "rater4"]
    assert page.locator("#heatmap tbody tr").count() == 4
    for pair in expected["rater_matrix"]:
        for a, b in ((pair["rater_a"], pair["rater_b"]), (pair["rater_b"], pair["rater_a"])):
            text = page.inner_text(f'#heatmap td[data-rater-a="{a}"][data-rater-b="{b}"]')
            assert f"{pair['mean_dice']:.3f}" in text and f"n = {pair['n']}" in text
    assert page.locator("#heatmap td.diagonal").count() == 4
    assert page.inner_text("#heatmap-legend").startswith("Mean pairwise Dice")

    # Per-rater bar chart: the server's figures, printed on the bars, axes titled, a legend.
    rater_chart = chart_data(page, "rater")
    by_rater = {r["rater"]: r for r in expected["per_rater"]}
    assert [c.split(" ")[0] for c in rater_chart["categories"]] == raters
    assert rater_chart["categories"][3] == "rater4 ⚑ flagged"
    assert [s["name"] for s in rater_chart["series"]] == ["Dice vs consensus", "Sensitivity", "Specificity"]
    assert rater_chart["series"][0]["values"] == pytest.approx([by_rater[r]["mean_dice_vs_consensus"] for r in raters])
    assert rater_chart["series"][1]["values"] == pytest.approx([by_rater[r]["mean_sensitivity"] for r in raters])
    assert all(s["drawn"] == 4 for s in rater_chart["series"])
    assert rater_chart["datalabels"] and rater_chart["legend"]
    assert rater_chart["xTitle"] == "Rater" and rater_chart["yTitle"]
    assert rater_chart["width"] > 300 and rater_chart["height"] > 200

    # Agreement over time: one line per label, the server's daily means.
    time_chart = chart_data(page, "time")
    assert [s["name"] for s in time_chart["series"]] == [label["name"] for label in expected["labels"]]
    days = sorted({row["date"] for row in expected["over_time"]})
    assert time_chart["categories"] == days
    for series, label in zip(time_chart["series"], expected["labels"], strict=True):
        want = {row["date"]: row["mean_dice"] for row in expected["over_time"] if row["label"] == label["value"]}
        assert series["values"] == pytest.approx([want[d] for d in days])
    assert time_chart["datalabels"] and time_chart["yTitle"] == "Mean pairwise Dice"

    # The summary counts from the server's totals (the page is not sent every pair).
    totals = expected["totals"]
    summary = page.inner_text("#summary")
    assert f"{totals['scans']} scans with a consensus" in summary
    assert f"{totals['pairs']} scan-label-rater pairs compared" in summary
    assert f"mean pairwise Dice {totals['mean_pairwise_dice']:.3f}" in summary

    # Least-agreed scans first, each linking to its review; all of them shown, so no "more" note.
    rows = page.locator("#scans-body tr")
    assert rows.count() == 3
    assert page.is_hidden("#scans-more")
    assert [int(rows.nth(i).get_attribute("data-scan")) for i in range(3)] == [s["scan"] for s in expected["scans"]]
    first = expected["scans"][0]
    assert f"{first['mean_pairwise_dice']:.3f}" in rows.first.inner_text()
    assert rows.first.locator("a").get_attribute("href") == f"/review/{first['scan']}/"
    # A flagged scan says why beside its badge, and every reason in the cell's title.
    flagged_rows = [(i, s) for i, s in enumerate(expected["scans"]) if s["flagged"]]
    assert flagged_rows
    for i, s in flagged_rows:
        assert s["flag_reasons"].split("; ")[0] in rows.nth(i).inner_text()
        assert rows.nth(i).locator("td[title]").filter(has_text="flagged").get_attribute("title") == s["flag_reasons"]

    # Per-label and per-rater tables, and a CSV download of every table.
    assert page.locator("#labels-body tr").count() == 3
    assert page.get_attribute('#raters-body tr[data-rater="rater4"]', "data-flagged") == "true"
    # Agreement by scan metadata: one table per column; no metadata set here, so one group of every scan.
    site = page.locator('#by-metadata table[data-column="site"] tbody tr')
    assert site.count() == 1
    cells = site.first.locator("td").all_inner_texts()
    by_site = [r for r in expected["by_metadata"] if r["column"] == "site"]
    assert cells[:2] == ["not recorded", str(max(r["scans"] for r in by_site))]
    assert cells[2:] == [f"{r['mean_dice']:.3f}" for r in sorted(by_site, key=lambda r: r["label"])]
    assert page.locator("#by-metadata table").count() == 6
    links = page.locator("#downloads a")
    assert links.count() == 7
    for i in range(links.count()):
        response = page.request.get(live_server.url + links.nth(i).get_attribute("href"))
        assert response.status == 200 and response.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(response.text())))
        assert table, links.nth(i).get_attribute("data-table")
    with page.expect_download() as download:
        page.click('#downloads a[data-table="per_rater"]')
    assert download.value.suggested_filename == f"project-{project.pk}-per_rater.csv"

    page.set_viewport_size({"width": 1400, "height": 900})
    shot(page, "dashboard")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-full.png"), full_page=True)

    # The project chooser lists it.
    page.goto(f"{live_server.url}/dashboard/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.get_attribute("#project-list a", "href") == f"/dashboard/{project.pk}/"


def test_annotators_see_no_agreement_figures(live_server, page, lead_world, shot):
    world = lead_world
    project = world.project
    log_in(page, live_server.url, "rater1", factories.PASSWORD)
    assert page.is_hidden("#dashboard-link")
    response = page.request.get(f"{live_server.url}/api/v1/projects/{project.pk}/agreement/")
    assert response.status == 403
    assert open_dashboard(page, live_server.url, project.pk) == "forbidden"
    text = page.inner_text("#forbidden")
    assert "leads and admins" in text and "403" in text
    assert page.is_hidden("#dashboard")
    assert page.locator("#heatmap td").count() == 0
    assert page.evaluate("Object.keys(window.mriannot.charts).length") == 0
    shot(page, "annotator-forbidden")

    # Nor through the project chooser, the review of a scan or the exports.
    page.goto(f"{live_server.url}/dashboard/")
    page.wait_for_selector("body[data-ready=forbidden]")
    scan = project.scans.first()
    page.goto(f"{live_server.url}/review/{scan.pk}/")
    page.wait_for_selector("body[data-ready=forbidden]")
    assert "leads and admins" in page.inner_text("#forbidden") and page.is_hidden("#workspace")
    page.goto(f"{live_server.url}/exports/{project.pk}/")
    page.wait_for_selector("body[data-ready=forbidden]")
    assert page.is_hidden("#exports")
