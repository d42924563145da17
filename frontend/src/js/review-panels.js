// The review page's panels: the scan and run facts with the reasons a run was flagged,
// per-rater performance, the agreement report, the runs and the flagged-scan navigation.
import { flaggedNeighbours } from "./flagged.js";
import { SOURCE_TEXT, STATUS_TEXT, METHOD_TEXT, app, labelName, raterNames, runText } from "./review-state.js";
import { $, showPageError } from "./session.js";
import { badge, cell, fillBody, fmt, pct, row } from "./tables.js";

export function renderScanFacts() {
  const { review } = app;
  $("scan-status").textContent = STATUS_TEXT[review.scan.status] || review.scan.status;
  const truth = review.ground_truth;
  $("truth-text").textContent = truth
    ? `#${truth.id}: ${SOURCE_TEXT[truth.source] || truth.source}${truth.run ? ` (run ${truth.run})` : ""}` +
      `${truth.created_by ? ` by ${truth.created_by}` : ""}, ${new Date(truth.created_at).toLocaleString()}`
    : "none yet";
  if (truth && review.scan.status !== "ground_truth") {
    // A submission went back for rework after it was made: history, not final (the scan is decided again).
    $("truth-text").textContent += ` · not final while the scan is ${STATUS_TEXT[review.scan.status] || review.scan.status}`;
  }
  const select = $("run-select");
  const done = review.runs.filter((r) => r.status === "done");
  select.replaceChildren(
    ...done.map((r) => {
      const option = document.createElement("option");
      option.value = String(r.id);
      option.textContent = `#${r.id} ${METHOD_TEXT[r.method] || r.method}${r.flagged ? " · flagged" : ""}`;
      return option;
    }),
  );
  if (!done.length) select.replaceChildren(Object.assign(document.createElement("option"), { textContent: "no finished run" }));
  if (app.run) select.value = String(app.run.id);
  select.disabled = !done.length || Boolean(app.editing);
}

/** The rerun form starts from the options of the run shown. */
export function fillRerunForm(run) {
  if (!run || run.method !== "staple") return;
  const o = run.options || {};
  if (o.region) $("opt-region").value = o.region;
  if (o.prior) $("opt-prior").value = o.prior;
  if (o.overrule) $("opt-overrule").value = o.overrule;
  if (o.max_iter !== undefined) $("opt-max-iter").value = String(o.max_iter);
  if (o.tol !== undefined) $("opt-tol").value = String(o.tol);
}

export function renderRunFacts() {
  const { run, project } = app;
  const canDecide = Boolean(run) && !app.editing && !app.inRework; // in rework: decided after the resubmission
  $("accept").disabled = !canDecide;
  $("edit-start").disabled = !canDecide;
  if (!run) {
    $("run-method").textContent = "–";
    $("run-ambiguity").textContent = "no finished consensus yet";
    renderFlagReasons([]);
    return;
  }
  $("run-method").textContent = `${runText(run)}${run.iterations ? ` · ${run.iterations} iterations${run.converged ? ", converged" : ", not converged"}` : ""}`;
  const details = run.ambiguity_details || {};
  $("run-ambiguity").textContent =
    `${pct(run.ambiguity)} of labelled voxels unsure (posterior of the consensus label < ${details.uncertain_below ?? 0.9}) · ` +
    `${run.flagged ? "flagged" : "not flagged"} (uncertainty threshold ${pct(project.ambiguity_threshold)})`;
  renderFlagReasons(run.flag_reasons || []);
  const truth = app.review.ground_truth;
  $("accept").textContent = truth?.run === run.id && truth.source !== "edited" ? "Accepted ✓ (accept again)" : "Accept this consensus";
}

/** Each reason the run was flagged, with its figures, as the server wrote it. */
function renderFlagReasons(reasons) {
  const list = $("flag-reasons-list");
  list.replaceChildren(
    ...reasons.map((r) => {
      const li = document.createElement("li");
      li.dataset.code = r.code;
      li.textContent = r.message;
      return li;
    }),
  );
  $("flag-reasons").hidden = reasons.length === 0;
}

function renderPerformance() {
  const run = app.run;
  const labels = [...app.review.labels].sort((a, b) => a.value - b.value);
  const rows = [];
  for (const perf of [...(run?.performances ?? [])].sort((a, b) => a.rater_index - b.rater_index)) {
    labels.forEach((label, i) => {
      const key = String(label.value);
      const cells = [];
      if (i === 0) {
        const who = cell(`${perf.rater_index + 1}: ${perf.annotator}`, { className: "rater" });
        who.rowSpan = labels.length;
        cells.push(who);
      }
      cells.push(
        cell(label.name),
        cell(fmt(perf.dice?.[key]), { num: true }),
        cell(fmt(perf.sensitivity?.[key]), { num: true }),
        cell(fmt(perf.specificity?.[key]), { num: true }),
      );
      rows.push(row(cells, { rater: perf.rater_index, label: label.value }));
    });
  }
  fillBody($("perf-body"), rows, { empty: "No consensus run shown.", columns: 5 });
}

function renderAgreement() {
  const report = app.run?.agreement;
  const names = raterNames();
  const facts = $("agreement-facts");
  if (!report) {
    facts.replaceChildren();
    fillBody($("agreement-body"), [], { empty: "No agreement report.", columns: 5 });
    fillBody($("pairs-body"), [], { empty: "–", columns: 5 });
    return;
  }
  const all = report.overall?.all || {};
  const entries = [
    ["Raters", String(report.n_raters)],
    ["Fleiss κ (all labels)", fmt(all.fleiss_kappa)],
    ["Krippendorff α", fmt(all.krippendorff_alpha)],
    ["Surface Dice tolerance", `${fmt(report.tolerance_mm, 1)} mm`],
  ];
  facts.replaceChildren(
    ...entries.flatMap(([term, value]) => [
      Object.assign(document.createElement("dt"), { textContent: term }),
      Object.assign(document.createElement("dd"), { textContent: value }),
    ]),
  );
  const byLabel = new Map();
  for (const pair of report.pairs || []) {
    if (!byLabel.has(pair.label)) byLabel.set(pair.label, []);
    byLabel.get(pair.label).push(pair);
  }
  const mean = (values) => {
    const finite = values.filter((v) => typeof v === "number");
    return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
  };
  const rows = [...byLabel.entries()].map(([label, pairs]) => {
    const dice = pairs.map((p) => p.dice).filter((v) => typeof v === "number");
    return row(
      [
        cell(labelName(label)),
        cell(fmt(mean(dice)), { num: true }),
        cell(dice.length ? fmt(Math.min(...dice)) : "–", { num: true }),
        cell(fmt(mean(pairs.map((p) => p.hausdorff95)), 2), { num: true }),
        cell(fmt(report.overall?.[String(label)]?.fleiss_kappa), { num: true }),
      ],
      { label },
    );
  });
  fillBody($("agreement-body"), rows, { empty: "No pair measured.", columns: 5 });
  const pairRows = (report.pairs || []).map((p) =>
    row([
      cell(labelName(p.label)),
      cell(`${names.get(p.rater_a) ?? p.rater_a + 1} vs ${names.get(p.rater_b) ?? p.rater_b + 1}`),
      cell(fmt(p.dice), { num: true }),
      cell(fmt(p.hausdorff95, 2), { num: true }),
      cell(fmt(p.surface_dice), { num: true }),
    ]),
  );
  fillBody($("pairs-body"), pairRows, { empty: "No pair measured.", columns: 5 });
}

/** @param {(runId: number) => Promise<void>} showRun what a run's "Show" button does */
export function renderRuns(showRun) {
  const rows = app.review.runs.map((r) => {
    let action = "";
    if (r.status === "done" && r.id === app.run?.id) action = badge("shown");
    else if (r.status === "done") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary small";
      button.textContent = "Show";
      button.disabled = Boolean(app.editing);
      button.addEventListener("click", () => showRun(r.id).catch((error) => showPageError(error.message)));
      action = button;
    }
    return row(
      [
        cell(String(r.id)),
        cell(runText(r), { title: r.error || r.message || "" }),
        cell(badge(r.status === "running" ? `running ${Math.round(r.progress * 100)} %` : r.status, `job-${r.status}`)),
        cell(pct(r.ambiguity), { num: true }),
        cell(action),
      ],
      { run: r.id, status: r.status },
    );
  });
  fillBody($("runs-body"), rows, { empty: "No consensus run yet.", columns: 5 });
}

function renderFlagNav() {
  const flagged = app.flagged;
  const { here, previous, next } = flaggedNeighbours(flagged, app.scanId, app.review.latest_run?.ambiguity ?? null);
  for (const [id, target] of [["prev-flagged", previous], ["next-flagged", next]]) {
    const a = $(id);
    a.setAttribute("aria-disabled", String(target === undefined));
    a.classList.toggle("disabled", target === undefined);
    a.href = target === undefined ? "#" : `/review/${target.id}/`;
    a.title = target === undefined ? "No other flagged scan this way" : `${target.subject_id || `Scan ${target.id}`}, ambiguity ${pct(target.ambiguity)}`;
  }
  $("flag-position").textContent =
    here >= 0
      ? `Flagged scan ${here + 1} of ${flagged.length}`
      : flagged.length
        ? `Not flagged · ${flagged.length} flagged scan${flagged.length === 1 ? "" : "s"} waiting`
        : "No flagged scan waiting";
}

/** @param {(runId: number) => Promise<void>} showRun */
export function renderAll(showRun) {
  renderScanFacts();
  renderRunFacts();
  renderPerformance();
  renderAgreement();
  renderRuns(showRun);
  renderFlagNav();
}

