// The review page of a scan (/review/<scan>/), for the project's leads and admins: the scan
// with one overlay at a time (the consensus, its uncertainty, the current ground truth, each
// rater's labels), per-rater performance and the agreement report of the consensus run shown,
// and the decision: accept the consensus, rerun it with another method or options, or edit a
// copy of it with the annotation tools and save that as the ground truth. Previous / next
// flagged scan walk the scans waiting for adjudication. This module loads the page and takes
// the decisions; review-overlays.js and review-panels.js draw the rest.
import { ApiError, api } from "./api.js";
import { Channels, wireChannelControls } from "./channels.js";
import { channelBindings, editingBindings, viewBindings } from "./editing-shortcuts.js";
import { leadApi } from "./lead-api.js";
import { markPalette, renderPalette } from "./palette.js";
import { ProgressView, pollJob } from "./poll.js";
import {
  buildOverlays,
  renderLegend,
  setOverlayControlsEnabled,
  setUncertaintyVisible,
  showOverlay,
  syncOpacityControl,
} from "./review-overlays.js";
import { fillRerunForm, renderAll, renderRunFacts, renderRuns, renderScanFacts } from "./review-panels.js";
import { loadRework, renderSubmissions, wireRework } from "./review-rework.js";
import { app, message } from "./review-state.js";
import { $, idFromPath, markReady, requireUser, runPage, showPageError, showUser } from "./session.js";
import { Shortcuts } from "./shortcuts.js";
import { fmt } from "./tables.js";
import { TOOLS, Tools } from "./tools.js";
import { Viewer } from "./viewer.js";

window.mriannot = app; // test hooks (read-only use)

/** Fetch the review again (after a decision or a new run); keeps the run and overlay shown. */
async function reloadReview() {
  [app.review, app.flagged] = await Promise.all([
    leadApi.review(app.scanId),
    leadApi.flaggedScans(app.project.id),
    loadRework(),
  ]);
  buildOverlays();
  renderAll(displayRun);
  renderSubmissions();
  const input = $(`overlay-${app.overlay}`);
  if (input) input.checked = true;
}

/** Show a finished run: its consensus, uncertainty, performance and agreement. */
async function displayRun(runId) {
  app.run = await leadApi.run(runId);
  fillRerunForm(app.run);
  buildOverlays();
  renderAll(displayRun);
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
  renderRuns(displayRun);
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
  const follow = (id) => () => {
    const a = $(id);
    if (a.getAttribute("aria-disabled") !== "true") window.location.assign(a.href);
  };
  return new Shortcuts([
    ...editingBindings(tools, { offered: ["navigate", "brush", "pen", "eraser"], active: () => Boolean(app.editing) }),
    ...viewBindings(viewer),
    ...channelBindings(app.channels),
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
  app.channels = new Channels(viewer, { onMessage: message });
  const channelList = app.channels.fetchList(scanId);
  const [project] = await Promise.all([api.project(review.scan.project), loadRework()]);
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
  app.channels.start(await channelList); // the other sequences load in the background
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
  renderAll(displayRun);
  renderSubmissions();
  wireControls();
  wireChannelControls(app.channels);
  await wireRework(reloadReview);
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
