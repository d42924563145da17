"""The lesion active-learning benchmark runs end to end on a tiny SIMULATED cohort: every strategy
starts from the same cases and model, adds distinct unlabelled cases up to each count of the
schedule, and the merged report prints the tables and writes the plot."""

from __future__ import annotations

import json

import pytest

from tests.bench import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_lesion_al")


def test_a_quick_run_follows_the_protocol_and_merges(bench, tmp_path, capsys):
    out = tmp_path / "al.json"
    bench.main(
        ["--quick", "--seeds", "0", "--strategies", "random,lesion_load,diversity,stratified", "--json", str(out)]
    )
    results = json.loads(out.read_text())
    assert [s["seed"] for s in results["seeds"]] == [0]
    assert len(results["pool_ids"]) == 7 and len(results["test_ids"]) == 3
    seed = results["seeds"][0]
    assert set(seed["initial"]) <= set(results["pool_ids"]) and len(seed["initial"]) == 2
    for strategy, rounds in seed["strategies"].items():
        assert [r["n"] for r in rounds] == [2, 3, 5], strategy
        assert rounds[0]["dice"] == seed["strategies"]["random"][0]["dice"]  # one round-0 model
        added = [case for r in rounds for case in r["added"]]
        assert len(set(added)) == len(added) == 3 and not set(added) & set(seed["initial"])
    assert seed["full"]["n"] == 7

    capsys.readouterr()
    png = tmp_path / "curves.png"
    bench.main(["--analyse-only", "--merge", str(out), str(out), "--png", str(png)])
    printed = capsys.readouterr().out
    assert "| lesion_load |" in printed and "Lesion-wise detection F1" in printed
    assert png.stat().st_size > 10_000
