// The review page of a scan (/review/<scan>/), for the project's leads and admins: the scan
// with one overlay at a time (the consensus, its uncertainty, the current ground truth, each
// rater's labels), per-rater performance and the agreement report of the consensus run shown,
// and the decision: accept the consensus, rerun it with another method or options, or edit a
// copy of it with the annotation tools and save that as the ground truth. Previous / next
// flagged scan walk the scans waiting for adjudication.
import { NVImage } from "@niivue/niivue";
import { ApiError, api } from "./api.js";
import { flaggedNeighbours } from "./flagged.js";
import { leadApi } from "./lead-api.js";
import { gunzipIfNeeded, readChannels, summarise } from "./nifti.js";
import { markPalette, renderPalette } from "./palette.js";
import { ProgressView, pollJob } from "./poll.js";
import { $, idFromPath, markReady, requireUser, runPage, showPageError, showUser } from "./session.js";
import { Shortcuts } from "./shortcuts.js";
import { badge, cell, fillBody, fmt, pct, row } from "./tables.js";
import { TOOLS, Tools } from "./tools.js";
import { Viewer } from "./viewer.js";


/** Uncertainty shown from (transparent below) and saturating at. */
const UNCERTAINTY_RANGE = [0.01, 0.5]; // a calibrated 2-1 vote of three raters is ~0.035
/** NiiVue colormap of the uncertainty overlay: orange to yellow, visible on grey MRI. */
const UNCERTAINTY_COLORMAP = "warm";

const METHOD_TEXT = { staple: "STAPLE", majority_vote: "Majority vote" };
const SOURCE_TEXT = {
  consensus: "consensus accepted automatically",
  accepted: "consensus accepted by a lead",
  edited: "edited by a lead",
};
const STATUS_TEXT = {
  new: "new",
  in_progress: "being rated",
  submitted: "all raters submitted",
  consensus: "consensus (not ambiguous)",
  flagged: "flagged for adjudication",
  ground_truth: "ground truth set",
};

/** Test hooks (read-only use): window.mriannot. */
const app = {
  scanId: null,
  viewer: null,
  tools: null,
  review: null,
  flagged: [],
  project: null,
  run: null,
  overlays: [],
  overlay: null,
  overlayToken: 0,
  cache: new Map(),
  uncertainty: null,
  uncertaintyOpacity: 0.8,
  editing: null,
};
window.mriannot = app;

function message(text) {
  $("message").textContent = text;
}

function optionsText(run) {
  if (run.method !== "staple") return "";
  const o = run.options || {};
  const decision = o.overrule === "any" ? "fit decides" : "majority stands";
  return `region ${o.region}, prior ${o.prior}, ${decision}, max_iter ${o.max_iter}, tol ${o.tol}`;
}

function runText(run) {
  const options = optionsText(run);
  return `${METHOD_TEXT[run.method] || run.method}${options ? ` (${options})` : ""}`;
}

function labelName(value) {
  return app.review.labels.find((l) => l.value === Number(value))?.name ?? `label ${value}`;
}

/** Rater index -> annotator name, for the run shown (or the scan's submitted revisions). */
function raterNames() {
  const names = new Map();
  for (const p of app.run?.performances ?? []) names.set(p.rater_index, p.annotator);
  if (!names.size) for (const r of app.review.raters) names.set(r.rater_index, r.annotator);
  return names;
}

// --- overlays ----------------------------------------------------------------------------------

function buildOverlays() {
  const { review, run } = app;
  const list = [];
  if (run) {
    list.push({
      key: "consensus",
      name: `Consensus (run ${run.id}, ${METHOD_TEXT[run.method] || run.method})`,
      kind: "labels",
      cacheKey: `run:${run.id}`,
      load: () => leadApi.runLabels(run.id),
    });
    list.push({ key: "uncertainty", name: "Uncertainty (1 − max posterior)", kind: "uncertainty" });
  }
  const truth = review.ground_truth;
  if (truth) {
    list.push({
      key: "truth",
      name: `Ground truth #${truth.id} (${truth.source})`,
      kind: "labels",
      cacheKey: `truth:${truth.id}`,
      load: () => leadApi.groundTruthLabels(truth.id),
    });
  }
  const raters = run?.performances?.length
    ? run.performances.map((p) => ({ rater_index: p.rater_index, revision: p.revision, annotator: p.annotator }))
    : review.raters;
  for (const r of raters) {
    list.push({
      key: `rater-${r.rater_index + 1}`,
      name: `Rater ${r.rater_index + 1}: ${r.annotator}`,
      kind: "labels",
      cacheKey: `revision:${r.revision}`,
      load: () => api.revisionLabels(r.revision),
    });
  }
  list.push({ key: "none", name: "Scan only", kind: "none" });
  app.overlays = list;
  const ul = $("overlay-list");
  ul.replaceChildren(
    ...list.map((overlay) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "overlay";
      input.value = overlay.key;
      input.id = `overlay-${overlay.key}`;
      input.addEventListener("change", () => {
        if (input.checked) showOverlay(overlay.key).catch((error) => showPageError(error.message));
      });
      label.append(input, overlay.name);
      li.append(label);
      return li;
    }),
  );
  setOverlayControlsEnabled(!app.editing);
}

function setOverlayControlsEnabled(enabled) {
  for (const input of document.querySelectorAll("#overlay-list input")) input.disabled = !enabled;
}

async function labelBytes(overlay) {
  if (!app.cache.has(overlay.cacheKey)) app.cache.set(overlay.cacheKey, await overlay.load());
  return app.cache.get(overlay.cacheKey).slice(0); // NiiVue may keep or change what it is given
}

function uncertaintyIndex() {
  return app.uncertainty ? app.viewer.nv.volumes.indexOf(app.uncertainty.image) : -1;
}

function setUncertaintyVisible(visible) {
  const index = uncertaintyIndex();
  if (index > 0) app.viewer.nv.setOpacity(index, visible ? app.uncertaintyOpacity : 0);
}

/**
 * The uncertainty volume of the run shown (once per run): 1 - max posterior, computed by the
 * server (3-D, a fifth of the 4-D posterior's bytes with five labels).
 */
async function ensureUncertainty() {
  const run = app.run;
  if (app.uncertainty?.runId === run.id) return app.uncertainty;
  if (app.uncertainty) {
    app.viewer.nv.removeVolume(app.uncertainty.image);
    app.uncertainty = null;
  }
  message("Loading the uncertainty…");
  const raw = await gunzipIfNeeded(await leadApi.runUncertainty(run.id));
  const data = readChannels(raw).channels[0];
  const image = await NVImage.loadFromUrl({
    url: `uncertainty-${run.id}.nii`,
    name: `uncertainty-${run.id}.nii`,
    buffer: raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength),
    colormap: UNCERTAINTY_COLORMAP,
    cal_min: UNCERTAINTY_RANGE[0],
    cal_max: UNCERTAINTY_RANGE[1],
    opacity: 0,
  });
  if (app.run?.id !== run.id) return null; // another run was chosen meanwhile
  image.cal_min = UNCERTAINTY_RANGE[0];
  image.cal_max = UNCERTAINTY_RANGE[1];
  app.viewer.nv.addVolume(image);
  renderUncertaintyLegend();
  const summary = summarise(data, UNCERTAINTY_RANGE[0]);
  app.uncertainty = { runId: run.id, image, data, summary };
  message(
    `Uncertainty of run ${run.id}: ${summary.above} voxels above ${UNCERTAINTY_RANGE[0]}, highest ${summary.max.toFixed(3)} ` +
      `(posterior channels: labels ${run.label_values.join(", ")}).`,
  );
  return app.uncertainty;
}

/** Show one overlay (the others hidden). */
async function showOverlay(key) {
  const { viewer } = app;
  const overlay = app.overlays.find((o) => o.key === key) ?? app.overlays[0];
  const token = ++app.overlayToken;
  document.body.dataset.overlay = "loading";
  if (overlay.kind === "labels") {
    const bytes = await labelBytes(overlay);
    if (token !== app.overlayToken) return;
    await viewer.loadLabels(bytes);
    setUncertaintyVisible(false);
    viewer.setLabelsVisible(true);
  } else if (overlay.kind === "uncertainty") {
    const ready = await ensureUncertainty();
    if (token !== app.overlayToken || !ready) return;
    viewer.setLabelsVisible(false);
    setUncertaintyVisible(true);
    viewer.nv.drawScene();
  } else {
    setUncertaintyVisible(false);
    viewer.setLabelsVisible(false);
  }
  app.overlay = overlay.key;
  const input = $(`overlay-${overlay.key}`);
  if (input) input.checked = true;
  $("readout-overlay").textContent = overlay.name;
  $("legend").hidden = overlay.kind !== "labels";
  $("uncertainty-legend").hidden = overlay.kind !== "uncertainty";
  syncOpacityControl();
  viewer.nv.createOnLocationChange();
  document.body.dataset.overlay = overlay.key;
}

function currentOpacity() {
  return app.overlays.find((o) => o.key === app.overlay)?.kind === "uncertainty" ? app.uncertaintyOpacity : app.viewer.labelOpacity;
}

function syncOpacityControl() {
  const percent = Math.round(currentOpacity() * 100);
  $("overlay-opacity").value = String(percent);
  $("overlay-opacity-value").textContent = `${percent} %`;
  $("outline").checked = app.viewer.outline;
}

/** The uncertainty colour bar, drawn from the colormap NiiVue uses for the overlay. */
function renderUncertaintyLegend() {
  const cmap = app.viewer.nv.colormapFromKey(UNCERTAINTY_COLORMAP);
  const last = cmap.I[cmap.I.length - 1] || 255;
  const stops = cmap.I.map((at, i) => `rgb(${cmap.R[i]}, ${cmap.G[i]}, ${cmap.B[i]}) ${Math.round((100 * at) / last)}%`);
  document.querySelector("#uncertainty-legend .uncertainty-bar").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const [lo, hi] = UNCERTAINTY_RANGE;
  const ticks = document.querySelectorAll("#uncertainty-legend .colour-bar-ticks span");
  ticks[0].textContent = lo.toFixed(2);
  ticks[1].textContent = `${hi.toFixed(2)} or more`;
}

function renderLegend() {
  const labels = [...app.review.labels].sort((a, b) => a.value - b.value);
  $("legend").replaceChildren(
    ...labels.map((l) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = l.color;
      li.append(swatch, `${l.value} · ${l.name}`);
      return li;
    }),
  );
}

// --- facts, performance, agreement, runs ----------------------------------------------------------

function renderScanFacts() {
  const { review } = app;
  $("scan-status").textContent = STATUS_TEXT[review.scan.status] || review.scan.status;
  const truth = review.ground_truth;
  $("truth-text").textContent = truth
    ? `#${truth.id}: ${SOURCE_TEXT[truth.source] || truth.source}${truth.run ? ` (run ${truth.run})` : ""}` +
      `${truth.created_by ? ` by ${truth.created_by}` : ""}, ${new Date(truth.created_at).toLocaleString()}`
    : "none yet";
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
function fillRerunForm(run) {
  if (!run || run.method !== "staple") return;
  const o = run.options || {};
  if (o.region) $("opt-region").value = o.region;
  if (o.prior) $("opt-prior").value = o.prior;
  if (o.overrule) $("opt-overrule").value = o.overrule;
  if (o.max_iter !== undefined) $("opt-max-iter").value = String(o.max_iter);
  if (o.tol !== undefined) $("opt-tol").value = String(o.tol);
}

function renderRunFacts() {
  const { run, project } = app;
  const canDecide = Boolean(run) && !app.editing;
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

function renderRuns() {
  const rows = app.review.runs.map((r) => {
    let action = "";
    if (r.status === "done" && r.id === app.run?.id) action = badge("shown");
    else if (r.status === "done") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary small";
      button.textContent = "Show";
      button.disabled = Boolean(app.editing);
      button.addEventListener("click", () => displayRun(r.id).catch((error) => showPageError(error.message)));
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

function renderAll() {
  renderScanFacts();
  renderRunFacts();
  renderPerformance();
  renderAgreement();
  renderRuns();
  renderFlagNav();
}

/** Fetch the review again (after a decision or a new run); keeps the run and overlay shown. */
async function reloadReview() {
  [app.review, app.flagged] = await Promise.all([leadApi.review(app.scanId), leadApi.flaggedScans(app.project.id)]);
  buildOverlays();
  renderAll();
  const input = $(`overlay-${app.overlay}`);
  if (input) input.checked = true;
}

/** Show a finished run: its consensus, uncertainty, performance and agreement. */
async function displayRun(runId) {
  app.run = await leadApi.run(runId);
  fillRerunForm(app.run);
  buildOverlays();
  renderAll();
  const keep = app.overlay && app.overlays.some((o) => o.key === app.overlay) ? app.overlay : "consensus";
  await showOverlay(["consensus", "uncertainty"].includes(keep) ? keep : "consensus");
  document.body.dataset.run = String(runId);
}

// --- decision: accept, rerun, edit ------------------------------------------------------------

function result(text, ok = true) {
  const p = $("decision-result");
  p.textContent = text;
  p.className = ok ? "result-ok" : "result-bad";
}

async function accept() {
  const run = app.run;
  $("accept").disabled = true;
  try {
    const truth = await leadApi.acceptRun(app.scanId, run.id, $("decision-note").value.trim());
    result(`Accepted: the consensus of run ${run.id} is ground truth #${truth.id} of this scan.`);
    $("decision-note").value = "";
    await reloadReview();
    document.body.dataset.accepted = String(truth.id);
  } catch (error) {
    result(`Not accepted: ${error.message}`, false);
  } finally {
    renderRunFacts();
  }
}

function readRerunForm() {
  const method = $("rerun-method").value;
  if (method !== "staple") return { method, options: {} };
  const maxIter = Number.parseInt($("opt-max-iter").value, 10);
  const tol = Number.parseFloat($("opt-tol").value);
  const options = { region: $("opt-region").value, prior: $("opt-prior").value, overrule: $("opt-overrule").value };
  if (Number.isFinite(maxIter)) options.max_iter = maxIter;
  if (Number.isFinite(tol)) options.tol = tol;
  return { method, options };
}

async function rerun(event) {
  event.preventDefault();
  const { method, options } = readRerunForm();
  const view = new ProgressView($("run-progress"), $("run-bar"), $("run-text"));
  $("rerun").disabled = true;
  try {
    const queued = await leadApi.requestRun(app.scanId, method, options);
    const job = await pollJob(() => leadApi.run(queued.id), {
      onUpdate: (job) => view.show(job, (j) => `run ${queued.id}${queued.reused ? " (same inputs: the existing run)" : ""}: ${j.message || j.status}`),
    });
    await reloadReview();
    if (job.status === "done") await displayRun(job.id);
  } catch (error) {
    view.show({ status: "failed", error: error.message });
  } finally {
    $("rerun").disabled = false;
  }
}

function refreshEditControls() {
  const { tools } = app;
  if (!tools) return;
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.classList.toggle("active", button.dataset.tool === tools.tool);
    button.setAttribute("aria-pressed", String(button.dataset.tool === tools.tool));
  }
  markPalette($("palette"), tools.label);
  $("pen-size").value = String(tools.penSize);
  $("pen-size-value").textContent = String(tools.penSize);
  $("undo").disabled = !app.editing || !tools.history.canUndo;
  $("redo").disabled = !app.editing || !tools.history.canRedo;
  for (const button of document.querySelectorAll("#view-buttons [data-view]")) {
    button.classList.toggle("active", button.dataset.view === app.viewer.view);
  }
}

function setEditing(editing) {
  app.editing = editing;
  $("edit-tools").hidden = !editing;
  setOverlayControlsEnabled(!editing);
  $("rerun").disabled = Boolean(editing);
  app.tools.setReadOnly(!editing);
  document.body.dataset.editing = String(Boolean(editing));
  renderScanFacts();
  renderRunFacts();
  renderRuns();
}

async function startEdit() {
  await showOverlay("consensus");
  setEditing({ run: app.run.id });
  $("edit-run").textContent = String(app.run.id);
  app.tools.resetHistory();
  app.tools.setTool("brush");
  message(`Editing a copy of run ${app.run.id}'s consensus: ${TOOLS.brush.hint}`);
}

async function saveEdit() {
  const { editing } = app;
  $("edit-save").disabled = true;
  try {
    const bytes = await app.viewer.exportLabels();
    const truth = await leadApi.saveEditedTruth(app.scanId, bytes, { runId: editing.run, note: $("edit-note").value.trim() });
    setEditing(null);
    await reloadReview();
    await showOverlay("truth");
    result(`Saved: your edit of run ${editing.run} is ground truth #${truth.id} of this scan.`);
    message(`Showing ground truth #${truth.id}, your edit.`);
    $("edit-note").value = "";
    document.body.dataset.saved = String(truth.id);
  } catch (error) {
    result(`Not saved: ${error.message}`, false);
  } finally {
    $("edit-save").disabled = false;
  }
}

async function cancelEdit() {
  setEditing(null);
  await showOverlay("consensus"); // the untouched consensus again
  message("Edit cancelled: nothing was stored.");
}

// --- wiring ------------------------------------------------------------------------------------

function wireControls() {
  const { viewer, tools } = app;
  $("overlay-opacity").addEventListener("input", (event) => {
    const value = Number(event.target.value) / 100;
    if (app.overlays.find((o) => o.key === app.overlay)?.kind === "uncertainty") {
      app.uncertaintyOpacity = value;
      setUncertaintyVisible(true);
    } else {
      viewer.setLabelOpacity(value);
    }
    syncOpacityControl();
  });
  $("outline").addEventListener("change", (event) => viewer.setOutline(event.target.checked));
  for (const button of document.querySelectorAll("#view-buttons [data-view]")) {
    button.addEventListener("click", () => viewer.setView(button.dataset.view));
  }
  viewer.on("view", refreshEditControls);
  $("reset-view").addEventListener("click", () => viewer.resetView());
  viewer.on("location", (loc) => {
    $("readout-vox").textContent = loc.vox.join(", ");
    $("readout-value").textContent = fmt(loc.value, 1);
    $("readout-label").textContent = viewer.labelsVisible && loc.label ? `${loc.label} (${loc.labelName})` : "–";
    const u = app.uncertainty;
    if (u && u.runId === app.run?.id) {
      const [nx, ny] = viewer.dims;
      $("readout-uncertainty").textContent = fmt(u.data[loc.vox[0] + loc.vox[1] * nx + loc.vox[2] * nx * ny], 3);
    } else {
      $("readout-uncertainty").textContent = "–";
    }
  });
  $("run-select").addEventListener("change", (event) => displayRun(Number(event.target.value)).catch((e) => showPageError(e.message)));
  $("accept").addEventListener("click", accept);
  $("edit-start").addEventListener("click", () => startEdit().catch((e) => showPageError(e.message)));
  $("edit-save").addEventListener("click", saveEdit);
  $("edit-cancel").addEventListener("click", () => cancelEdit().catch((e) => showPageError(e.message)));
  $("rerun-form").addEventListener("submit", rerun);
  $("rerun-method").addEventListener("change", () => {
    $("staple-options").hidden = $("rerun-method").value !== "staple";
  });
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.addEventListener("click", () => tools.setTool(button.dataset.tool));
  }
  $("pen-size").addEventListener("input", (event) => tools.setPenSize(Number(event.target.value)));
  $("undo").addEventListener("click", () => tools.undo());
  $("redo").addEventListener("click", () => tools.redo());
  for (const id of ["prev-flagged", "next-flagged"]) {
    $(id).addEventListener("click", (event) => {
      if ($(id).getAttribute("aria-disabled") === "true") event.preventDefault();
    });
  }
  window.addEventListener("beforeunload", (event) => {
    if (app.editing && tools.history.canUndo) {
      event.preventDefault(); // unsaved edits of the consensus: the browser asks "leave the page?"
      event.returnValue = "";
    }
  });
}

function buildShortcuts() {
  const { tools, viewer } = app;
  const whileEditing = (tool) => () => {
    if (app.editing) tools.setTool(tool);
  };
  const follow = (id) => () => {
    const a = $(id);
    if (a.getAttribute("aria-disabled") !== "true") window.location.assign(a.href);
  };
  return new Shortcuts([
    { keys: ["Escape"], group: "Editing", description: "Navigate", run: whileEditing("navigate") },
    { keys: ["b"], group: "Editing", description: "Brush", run: whileEditing("brush") },
    { keys: ["p"], group: "Editing", description: "Filled pen", run: whileEditing("pen") },
    { keys: ["e"], group: "Editing", description: "Eraser", run: whileEditing("eraser") },
    { keys: ["Ctrl+z"], group: "Editing", description: "Undo", run: () => app.editing && tools.undo() },
    { keys: ["Ctrl+y", "Ctrl+Shift+z"], group: "Editing", description: "Redo", run: () => app.editing && tools.redo() },
    { keys: ["["], group: "Editing", description: "Smaller brush", run: () => tools.setPenSize(tools.penSize - 1) },
    { keys: ["]"], group: "Editing", description: "Larger brush", run: () => tools.setPenSize(tools.penSize + 1) },
    { keys: ["m"], group: "Views", description: "Multiplanar", run: () => viewer.setView("multiplanar") },
    { keys: ["a"], group: "Views", description: "Axial", run: () => viewer.setView("axial") },
    { keys: ["c"], group: "Views", description: "Coronal", run: () => viewer.setView("coronal") },
    { keys: ["s"], group: "Views", description: "Sagittal", run: () => viewer.setView("sagittal") },
    { keys: ["n"], group: "Flagged scans", description: "Next flagged scan", run: follow("next-flagged") },
    { keys: ["Shift+n"], group: "Flagged scans", description: "Previous flagged scan", run: follow("prev-flagged") },
  ]);
}

// --- start -------------------------------------------------------------------------------------

function forbidden(text) {
  $("forbidden-text").textContent = text;
  $("forbidden").hidden = false;
  $("workspace").hidden = true;
  $("scan-title").textContent = "";
  markReady("forbidden");
}

async function main() {
  const scanId = idFromPath("review");
  if (!scanId) throw new Error("This address names no scan: open a scan from the agreement dashboard.");
  app.scanId = scanId;
  const viewer = new Viewer($("gl"));
  app.viewer = viewer;
  const attached = viewer.attach();
  const me = await requireUser();
  showUser(me);
  let review;
  try {
    review = await leadApi.review(scanId);
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      forbidden(
        "Only the project's leads and admins review scans. Raters are blinded to each other, so the consensus, " +
          `the agreement figures and other raters' labels are not shown to annotators. (The server answered 403: ${error.message})`,
      );
      return;
    }
    if (error instanceof ApiError && error.status === 404) {
      forbidden(`Scan ${scanId} does not exist, or it is not in a project you lead.`);
      return;
    }
    throw error;
  }
  app.review = review;
  const imagePromise = api.scanImage(scanId);
  const project = await api.project(review.scan.project);
  app.project = project;
  app.flagged = await leadApi.flaggedScans(project.id);
  const name = review.scan.subject_id || `Scan ${scanId}`;
  document.title = `Review ${name} · mriannot`;
  $("scan-title").textContent = `Review · ${name} · ${project.name}`;
  $("scan-title").title = `${review.scan.shape.join("×")} voxels of ${review.scan.spacing.map((s) => fmt(s, 2)).join("×")} mm`;
  $("dashboard-link").href = `/dashboard/${project.id}/`;
  $("simulated-notice").hidden = !project.is_simulated;

  await attached;
  viewer.setLabelSchema(review.labels);
  await viewer.loadImage(await imagePromise);
  viewer.applyLabelDisplay({ redraw: false });
  await viewer.loadLabels(null); // an empty drawing, so the tools have a bitmap from the start
  app.run = review.latest_run;
  fillRerunForm(app.run);
  const tools = new Tools(viewer, {
    labels: review.labels,
    onEdit: () => viewer.nv.createOnLocationChange(),
    onMessage: message,
    onChange: refreshEditControls,
  });
  app.tools = tools;
  tools.attach();
  tools.setReadOnly(true);
  renderPalette($("palette"), app.tools.labels, (value) => app.tools.setLabel(value));
  renderLegend();
  buildOverlays();
  renderAll();
  wireControls();
  buildShortcuts().install();
  const first = app.run ? "consensus" : review.ground_truth ? "truth" : app.overlays[0].key;
  await showOverlay(first);
  if (!app.run) {
    message(
      review.raters.length >= 2
        ? "No finished consensus yet: run one with the form on the right."
        : `Only ${review.raters.length} rater${review.raters.length === 1 ? " has" : "s have"} submitted: a consensus needs at least 2.`,
    );
    $("rerun").disabled = review.raters.length < 2;
  }
  $("loading").hidden = true;
  document.body.dataset.run = app.run ? String(app.run.id) : "";
  refreshEditControls();
  markReady();
}

runPage(main, { loadingText: "The scan could not be opened." });
