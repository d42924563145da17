// The annotation page (/annotate/<assignment>/): wires the viewer, the tools, autosave,
// the offline store and the shortcuts to the API and the workflow (save, conflict, submit).
import { ApiError, api } from "./api.js";
import { Autosave, STATE } from "./autosave.js";
import { Channels, wireChannelControls } from "./channels.js";
import { CommentThread } from "./comments.js";
import { wireBrushCursor } from "./brush-cursor.js";
import { ALL_EDITING, channelBindings, editingBindings, viewBindings } from "./editing-shortcuts.js";
import { Measurements } from "./measure.js";
import { OfflineStore } from "./offline-store.js";
import { Operations } from "./operations.js";
import { markPalette, renderPalette } from "./palette.js";
import { wireRangeHistogram } from "./range-histogram.js";
import { $, idFromPath, markReady, requireUser, runPage, showPageError, showUser } from "./session.js";
import { Shortcuts } from "./shortcuts.js";
import { loadStartingPoint } from "./starting-point.js";
import { TOOLS, Tools } from "./tools.js";
import { Viewer, WINDOW_PRESETS } from "./viewer.js";


const STATE_TEXT = {
  [STATE.SAVED]: "Saved",
  [STATE.UNSAVED]: "Unsaved changes",
  [STATE.SAVING]: "Saving…",
  [STATE.CONFLICT]: "Conflict: choose what to keep",
  [STATE.OFFLINE]: "Offline: edits kept in this browser",
  [STATE.ERROR]: "Not saved",
  [STATE.SUBMITTED]: "Submitted (read-only)",
};

/** Test and benchmark hooks (read-only use): window.mriannot. */
const app = {
  timing: { start: performance.now() },
  viewer: null,
  channels: null, // the scan's sequences (channels.js)
  tools: null,
  operations: null, // server operations on the labels (operations.js)
  measure: null, // label volumes, island under the crosshair (measure.js)
  autosave: null,
  store: null,
  assignment: null,
  scan: null,
  project: null,
  startingPoint: null,
};
window.mriannot = app;

function autosaveDelay() {
  // A developer knob (tests use a short delay): localStorage "mriannot.autosaveDelayMs".
  const value = Number(window.localStorage.getItem("mriannot.autosaveDelayMs"));
  return Number.isFinite(value) && value > 0 ? value : 1000;
}

function message(text) {
  $("message").textContent = text;
}

function fmt(n, digits = 1) {
  return Number.isFinite(n) ? n.toFixed(digits) : "–";
}

// --- save state ----------------------------------------------------------------------------

function showSaveState(state, info) {
  const badge = $("save-state");
  badge.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (state === STATE.SAVED && app.autosave?.base) text = `Saved (revision ${app.autosave.base})`;
  if (state === STATE.ERROR && info.message) text = `Not saved: ${info.message}`;
  badge.textContent = text;
  badge.title = info.message || text;
  if (state === STATE.OFFLINE || state === STATE.ERROR) message(info.message || "");
  if (state === STATE.CONFLICT) openConflict(info);
  if (state === STATE.SUBMITTED) setReadOnly("This assignment is submitted: the labels are frozen and shown read-only.");
  $("save-now").disabled = state === STATE.SUBMITTED || state === STATE.SAVED;
}

// --- conflict ------------------------------------------------------------------------------

function openConflict(info) {
  const dialog = $("conflict-dialog");
  $("conflict-text").textContent =
    info.text ||
    `Your labels are based on revision ${info.base ?? "none (a first save)"}, but the server now has revision ` +
      `${info.currentRevision}, saved from another tab or device.`;
  dialog.dataset.currentRevision = String(info.currentRevision ?? "");
  if (!dialog.open) dialog.showModal();
}

async function reloadRevision(revisionId) {
  const bytes = revisionId ? await api.revisionLabels(revisionId) : null;
  await app.viewer.loadLabels(bytes);
  app.viewer.applyLabelDisplay();
  app.tools.resetHistory();
  app.measure?.changed();
  await app.autosave.resetTo(revisionId);
  message(revisionId ? `Reloaded revision ${revisionId} from the server.` : "Reloaded: the server has no revision yet.");
}

function wireConflictDialog() {
  const dialog = $("conflict-dialog");
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // a choice is needed
  $("conflict-reload").addEventListener("click", async () => {
    dialog.close();
    const current = Number(dialog.dataset.currentRevision) || null;
    try {
      await reloadRevision(current);
    } catch (error) {
      showPageError(`Could not reload revision ${current}: ${error.message}`);
    }
  });
  $("conflict-keep").addEventListener("click", async () => {
    dialog.close();
    const current = Number(dialog.dataset.currentRevision) || null;
    await app.autosave.keepMine(current);
    if (app.autosave.state === STATE.SAVED) message(`Your labels are saved as revision ${app.autosave.base}, on top of revision ${current}.`);
  });
}

// --- read-only -----------------------------------------------------------------------------

function setReadOnly(text) {
  app.readOnly = true;
  app.tools?.setReadOnly(true);
  const note = $("readonly-notice");
  note.textContent = text;
  note.hidden = false;
  for (const button of document.querySelectorAll("#tool-buttons button, #ops button, #undo, #redo, #submit, #save-now")) {
    button.disabled = true;
  }
}

// --- controls ------------------------------------------------------------------------------

function refreshControls() {
  const { tools, viewer } = app;
  if (!tools) return;
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.classList.toggle("active", button.dataset.tool === tools.tool);
    button.setAttribute("aria-pressed", String(button.dataset.tool === tools.tool));
  }
  markPalette($("palette"), tools.label);
  for (const button of document.querySelectorAll("#view-buttons [data-view]")) {
    button.classList.toggle("active", button.dataset.view === viewer.view);
  }
  $("tool-hint").textContent = TOOLS[tools.tool].hint;
  $("pen-size").value = String(tools.penSize);
  $("pen-size-value").textContent = String(tools.penSize);
  $("pen-size-mm").textContent = `${fmt(tools.brushMm)} mm`;
  $(tools.shape === "sphere" ? "shape-sphere" : "shape-disc").checked = true;
  $("threshold").checked = tools.threshold;
  app.range?.refresh();
  const pending = tools.pending;
  $("preview-bar").hidden = !pending;
  document.body.dataset.preview = pending ? "pending" : "none";
  if (pending) $("preview-text").textContent = `Preview: ${pending.description} (${pending.changed} voxels).`;
  const busy = Boolean(app.operations?.busy);
  for (const button of document.querySelectorAll("#ops button")) {
    if (button.closest("#preview-bar")) continue;
    button.disabled = app.readOnly || busy || Boolean(pending);
  }
  app.measure?.refreshControls();
  const measurements = tools.measurements;
  $("ruler-value").textContent = measurements.length ? `${fmt(measurements[measurements.length - 1].distance)} mm` : "drag with the Ruler (Shift+R)";
  $("undo").disabled = app.readOnly || !tools.history.canUndo;
  $("redo").disabled = app.readOnly || !tools.history.canRedo;
  $("zoom-value").textContent = `${Math.round(viewer.zoom() * 100)} %`;
  $("wl-preset").value = viewer.preset;
  $("label-opacity").value = String(Math.round(viewer.labelOpacity * 100));
  $("label-opacity-value").textContent = `${Math.round(viewer.labelOpacity * 100)} %`;
  $("outline").checked = viewer.outline;
  $("labels-visible").checked = viewer.labelsVisible;
}

function wireControls() {
  const { tools, viewer } = app;
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.addEventListener("click", () => tools.setTool(button.dataset.tool));
  }
  for (const button of document.querySelectorAll("#view-buttons [data-view]")) {
    button.addEventListener("click", () => viewer.setView(button.dataset.view));
  }
  $("pen-size").addEventListener("input", (e) => tools.setPenSize(Number(e.target.value)));
  for (const radio of document.querySelectorAll("input[name=brush-shape]")) {
    radio.addEventListener("change", () => radio.checked && tools.setShape(radio.value));
  }
  $("threshold").addEventListener("change", (e) => tools.setThreshold(e.target.checked));
  const readRange = () => tools.setFillRange(parseFloat($("fill-lo").value), parseFloat($("fill-hi").value));
  $("fill-lo").addEventListener("change", readRange);
  $("fill-hi").addEventListener("change", readRange);
  app.range = wireRangeHistogram(
    { canvas: $("range-histogram"), lo: $("range-lo"), hi: $("range-hi"), fieldLo: $("fill-lo"), fieldHi: $("fill-hi") },
    viewer,
    tools,
  );
  $("range-pick").addEventListener("click", () => tools.rangeFromCrosshair());
  $("range-auto").addEventListener("click", () => {
    $("fill-lo").value = "";
    $("fill-hi").value = "";
    tools.setFillRange(NaN, NaN);
  });
  wireOperations();
  wireBrushCursor($("brush-cursor"), viewer, tools);
  $("ruler-clear").addEventListener("click", () => {
    viewer.nv.clearMeasurements();
    tools.measurements = [];
    refreshControls();
  });
  $("fill-from-window").addEventListener("click", () => {
    const wl = viewer.windowLevel();
    $("fill-lo").value = wl.min.toFixed(1);
    $("fill-hi").value = wl.max.toFixed(1);
    readRange();
  });
  $("undo").addEventListener("click", () => tools.undo());
  $("redo").addEventListener("click", () => tools.redo());
  $("label-opacity").addEventListener("input", (e) => {
    viewer.setLabelOpacity(Number(e.target.value) / 100);
    refreshControls();
  });
  $("outline").addEventListener("change", (e) => viewer.setOutline(e.target.checked));
  $("labels-visible").addEventListener("change", (e) => viewer.setLabelsVisible(e.target.checked));
  const presets = $("wl-preset");
  for (const [key, preset] of Object.entries(WINDOW_PRESETS)) {
    const option = document.createElement("option");
    option.value = key;
    option.textContent = preset.name;
    presets.append(option);
  }
  const region = document.createElement("option");
  region.value = "region";
  region.textContent = "From a region (Shift+W)";
  presets.append(region);
  const custom = document.createElement("option");
  custom.value = "custom";
  custom.textContent = "Custom (dragged)";
  presets.append(custom);
  presets.addEventListener("change", () => {
    if (presets.value === "region") tools.setTool("wlregion");
    else viewer.applyPreset(presets.value);
  });
  viewer.on("window", (wl) => {
    $("wl-value").textContent = `Window ${fmt(wl.window)} · level ${fmt(wl.level)} (${fmt(wl.min)} to ${fmt(wl.max)})`;
    const preset = WINDOW_PRESETS[viewer.preset];
    if (preset) {
      const [lo, hi] = preset.range(viewer.volume);
      if (Math.abs(lo - wl.min) > 1e-6 || Math.abs(hi - wl.max) > 1e-6) viewer.preset = "custom";
    }
    $("wl-preset").value = viewer.preset;
  });
  viewer.on("view", () => refreshControls());
  viewer.on("location", (loc) => {
    $("readout-vox").textContent = loc.vox.join(", ");
    $("readout-mm").textContent = loc.mm.map((v) => fmt(v)).join(", ");
    $("readout-value").textContent = fmt(loc.value, 2);
    $("readout-label").textContent = loc.label ? `${loc.label} (${loc.labelName})` : "none";
    app.measure?.scheduleIsland();
  });
  $("zoom-in").addEventListener("click", () => viewer.zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => viewer.zoomBy(1 / 1.25));
  $("reset-view").addEventListener("click", () => viewer.resetView());
  $("save-now").addEventListener("click", () => app.autosave.flush());
  $("submit").addEventListener("click", openSubmit);
  $("help-button").addEventListener("click", toggleHelp);
  wireChannelControls(app.channels);
  app.channels.on(() => app.range?.refresh()); // the histogram follows the background sequence
}

/** The fill-between-slices, clean-up and grow buttons and their settings. */
function wireOperations() {
  const { tools, operations } = app;
  const number = (id, set) => {
    const input = $(id);
    input.addEventListener("change", () => {
      const value = parseFloat(input.value);
      if (Number.isFinite(value) && value >= 0) set(value);
    });
  };
  number("island-min", (v) => (operations.minIslandMm3 = v));
  number("margin-mm", (v) => (operations.marginMm = v));
  number("smooth-mm", (v) => (operations.smoothMm = v));
  $("interpolate").addEventListener("click", () => tools.interpolate());
  $("grow-seeds").addEventListener("click", () => operations.growFromSeeds());
  $("outside-seed").addEventListener("click", () => tools.setLabel(tools.labelForKey(0)));
  $("islands-remove").addEventListener("click", () => operations.removeSmallIslands());
  $("islands-largest").addEventListener("click", () => operations.keepLargestIsland());
  $("islands-keep").addEventListener("click", () => operations.keepIslandAtCrosshair());
  $("margin-grow").addEventListener("click", () => operations.margin(1));
  $("margin-shrink").addEventListener("click", () => operations.margin(-1));
  $("smooth").addEventListener("click", () => operations.smooth());
  $("preview-accept").addEventListener("click", () => tools.acceptPreview());
  $("preview-reject").addEventListener("click", () => tools.rejectPreview());
}

function toggleHelp() {
  const dialog = $("help-dialog");
  if (dialog.open) dialog.close();
  else dialog.showModal();
}

// --- shortcuts ---------------------------------------------------------------------------------

function buildShortcuts() {
  const { tools, viewer } = app;
  const bindings = [
    { keys: ["?"], group: "General", description: "Show or hide this help", run: toggleHelp, whenDialogOpen: true },
    { keys: ["Ctrl+s"], group: "General", description: "Save now (autosave also runs after each edit)", run: () => app.autosave.flush() },
    { keys: ["Ctrl+Enter"], group: "General", description: "Submit and open the next scan", run: openSubmit },
    ...editingBindings(tools, { offered: ALL_EDITING, operations: app.operations, active: () => !app.readOnly }),
    {
      keys: ["1", "2", "3", "4", "5", "6", "7", "8", "9"],
      display: ["1 … 9"],
      group: "Labels",
      description: "Select label 1–9 of the palette",
      run: (e) => {
        const value = tools.labelForKey(Number(e.key));
        if (value !== null) tools.setLabel(value);
      },
    },
    {
      keys: ["l"],
      group: "Labels",
      description: "Show / hide labels",
      run: () => {
        viewer.setLabelsVisible(!viewer.labelsVisible);
        refreshControls();
      },
    },
    {
      keys: ["o"],
      group: "Labels",
      description: "Outline / filled labels",
      run: () => {
        viewer.setOutline(!viewer.outline);
        refreshControls();
      },
    },
    ...viewBindings(viewer),
    { keys: ["d"], group: "Views", description: "3D rendering", run: () => viewer.setView("render") },
    ...channelBindings(app.channels),
    {
      keys: ["v"],
      group: "Views",
      description: "Next view",
      run: () => viewer.cycleView(),
    },
    { keys: ["ArrowUp", "PageUp"], group: "Navigation", description: "Next slice", run: () => viewer.moveSlice(1) },
    { keys: ["ArrowDown", "PageDown"], group: "Navigation", description: "Previous slice", run: () => viewer.moveSlice(-1) },
    {
      keys: ["+", "="],
      group: "Navigation",
      description: "Zoom in",
      run: () => viewer.zoomBy(1.25),
    },
    {
      keys: ["-"],
      group: "Navigation",
      description: "Zoom out",
      run: () => viewer.zoomBy(1 / 1.25),
    },
    {
      keys: ["r"],
      group: "Navigation",
      description: "Reset zoom and pan (3D Slicer)",
      run: () => viewer.resetView(),
    },
    {
      keys: ["w"],
      group: "Window / level",
      description: "Next window/level preset",
      run: () => {
        const name = viewer.nextPreset();
        message(`Window/level: ${WINDOW_PRESETS[name].name}`);
      },
    },
  ];
  return new Shortcuts(bindings);
}

// --- submit --------------------------------------------------------------------------------

function openSubmit() {
  if (app.readOnly) return;
  $("submit-error").textContent = "";
  $("submit-confirm").disabled = false;
  $("submit-dialog").showModal();
}

async function submitAndNext() {
  const { autosave, assignment } = app;
  $("submit-confirm").disabled = true;
  const error = (text) => {
    $("submit-error").textContent = text;
    $("submit-confirm").disabled = false;
  };
  if (!autosave.base) autosave.markDirty(); // never saved (nothing to label here?): save the empty volume once
  const state = await autosave.flush();
  if (state !== STATE.SAVED) {
    error(`Your labels are not saved (${STATE_TEXT[state] || state}); they must be saved before you submit.`);
    return;
  }
  try {
    await api.submit(assignment.id, autosave.base);
  } catch (err) {
    error(err.message);
    return;
  }
  autosave.freeze();
  // The next scan of the same project (work sent back first, then by priority: the worklist's order).
  let next = null;
  try {
    const items = await api.worklist(assignment.project);
    next = items.find((item) => item.status !== "submitted" && item.assignment !== assignment.id);
  } catch {
    // the worklist page will show it
  }
  window.location.assign(next ? `/annotate/${next.assignment}/` : `/?done=1&project=${assignment.project}`);
}

// --- rework and comments -------------------------------------------------------------------

/** A submission a lead sent back: say so, and why, above the viewer. */
function showReturned(assignment) {
  const comment = assignment.return_comment;
  $("return-notice").hidden = !(assignment.status === "returned" && comment);
  if ($("return-notice").hidden) return;
  $("return-author").textContent = comment.author;
  $("return-when").textContent = new Date(comment.created_at).toLocaleString();
  $("return-text").textContent = comment.text;
}

/** The thread of this assignment between its rater and the leads. */
function wireComments(assignment, isMine) {
  if (!isMine) {
    $("comments-who").textContent = `Your thread with ${assignment.annotator} about this scan; other raters never see it.`;
    $("comment-form").querySelector("label").textContent = `Write to ${assignment.annotator}`;
  }
  app.comments = new CommentThread({
    list: $("comments"),
    form: $("comment-form"),
    input: $("comment-text"),
    status: $("comment-status"),
    scanId: assignment.scan,
    assignmentId: assignment.id,
  });
  app.comments.load().catch((error) => {
    $("comment-status").textContent = `Comments could not be loaded: ${error.message}`;
  });
}

function wireSubmitDialog() {
  $("submit-cancel").addEventListener("click", () => $("submit-dialog").close());
  $("submit-confirm").addEventListener("click", () => submitAndNext());
}

// --- leaving the page ----------------------------------------------------------------------

function wireLeaving() {
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden" && app.autosave?.dirty) app.autosave.flush({ leaving: true });
  });
  window.addEventListener("beforeunload", (event) => {
    const autosave = app.autosave;
    if (!autosave || autosave.state === STATE.SUBMITTED) return;
    if (autosave.dirty || autosave.inFlight) {
      autosave.flush({ leaving: true });
      event.preventDefault(); // the browser asks "leave the page?"; the edits are also in IndexedDB
      event.returnValue = "";
    }
  });
  $("worklist-link").addEventListener("click", async (event) => {
    if (!app.autosave?.dirty) return;
    event.preventDefault();
    message("Saving before leaving…");
    await app.autosave.flush();
    window.location.assign("/");
  });
}

// --- start ---------------------------------------------------------------------------------

async function main() {
  const assignmentId = idFromPath("annotate");
  if (!assignmentId) throw new Error("This address names no assignment: open a scan from your worklist.");
  // WebGL set-up (shader compilation) takes a while: start it at once, beside the requests.
  const viewer = new Viewer($("gl"));
  app.viewer = viewer;
  const attached = viewer.attach().then(() => {
    app.timing.attached = performance.now();
  });
  const [me, assignment] = await Promise.all([
    requireUser(),
    api.assignment(assignmentId).catch((error) => {
      if (error instanceof ApiError && error.status === 404) {
        throw new Error(`Assignment ${assignmentId} does not exist or is not yours: open a scan from your worklist.`);
      }
      throw error;
    }),
  ]);
  app.assignment = assignment;
  showUser(me, { beforeLogout: () => app.autosave?.flush() });
  const isMine = assignment.annotator === me.username;
  showReturned(assignment);
  wireComments(assignment, isMine);

  const store = new OfflineStore();
  app.store = store;
  // Everything the first frame needs, in parallel: image, starting labels, project, scan.
  const imagePromise = api.scanImage(assignment.scan);
  app.channels = new Channels(viewer, { onMessage: message });
  const channelList = app.channels.fetchList(assignment.scan);
  const startPromise = isMine
    ? loadStartingPoint({ assignment, project: null, username: me.username, store })
    : Promise.resolve(null); // blinding: never request another rater's labels
  const [project, scan] = await Promise.all([api.project(assignment.project), api.scan(assignment.scan)]);
  app.project = project;
  app.scan = scan;
  document.title = `${scan.subject_id || `Scan ${scan.id}`} · mriannot`;
  const title = $("scan-title");
  title.textContent = `${scan.subject_id || `Scan ${scan.id}`} · ${project.name}`;
  title.title = `${title.textContent} · ${scan.shape.join("×")} voxels of ${scan.spacing.map((s) => fmt(s, 2)).join("×")} mm · uploaded as ${scan.orientation}, shown in RAS`;
  $("simulated-notice").hidden = !project.is_simulated;

  app.timing.metadata = performance.now();
  await attached;
  viewer.setLabelSchema(project.labels);
  viewer.applyLabelDisplay({ redraw: false });
  const [imageBytes, start] = await Promise.all([imagePromise, startPromise]);
  app.timing.fetched = performance.now();
  app.startingPoint = start && { ...start, bytes: undefined, offer: start.offer && { modelVersion: start.offer.modelVersion } };
  await viewer.loadScan(imageBytes, start?.bytes ?? null);
  app.timing.parsed = viewer.timing.parsed;
  app.timing.loaded = performance.now();
  $("loading").hidden = true;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  app.timing.firstFrame = performance.now();
  app.channels.start(await channelList); // the other sequences load after the first frame

  const tools = new Tools(viewer, {
    labels: project.labels,
    onEdit: () => {
      app.autosave.markDirty();
      app.measure?.changed();
      viewer.nv.createOnLocationChange(); // the read-out shows the label under the crosshair
    },
    onMessage: message,
    onChange: refreshControls,
  });
  app.tools = tools;
  app.operations = new Operations({ assignmentId: assignment.id, tools, channels: app.channels, onMessage: message, onChange: refreshControls });
  renderPalette($("palette"), tools.labels, (value) => app.tools.setLabel(value), {
    emptyText: "This project has no labels yet: a lead must add them before you can draw.",
    controls: {
      onVisible: (value, visible) => viewer.setLabelDisplay(value, { visible }),
      onLock: (value, locked) => tools.setLocked(value, locked),
      onOpacity: (value, opacity) => viewer.setLabelDisplay(value, { opacity }),
    },
  });
  app.measure = new Measurements({
    viewer,
    tools,
    palette: $("palette"),
    onIsland: (text) => {
      $("island-volume").textContent = text || "–";
      $("readout-island").textContent = text || "–";
    },
  });
  app.autosave = new Autosave({
    assignmentId: assignment.id,
    username: me.username,
    base: start?.base ?? null,
    source: start?.source ?? "manual",
    exportLabels: () => viewer.exportLabels(tools.committedBitmap()), // never a pending preview
    store: isMine ? store : null,
    delayMs: autosaveDelay(),
    onState: showSaveState,
  });
  tools.attach();
  wireControls();
  wireConflictDialog();
  wireSubmitDialog();
  wireLeaving();
  const shortcuts = buildShortcuts();
  shortcuts.renderHelp($("help-content"));
  shortcuts.install();
  $("starting-point").textContent = start ? start.description : "nothing (the labels are not yours to see)";

  if (!isMine) {
    setReadOnly(
      `This assignment belongs to ${assignment.annotator}. Raters are blinded to each other, so the viewer does not load their labels; you see the scan only.`,
    );
    $("save-state").dataset.state = "readonly";
    $("save-state").textContent = "Read-only";
  } else if (assignment.status === "submitted") {
    app.autosave.freeze();
  } else {
    $("submit").disabled = false;
    showSaveState(STATE.SAVED, {});
    if (start.unsaved) app.autosave.adoptUnsaved();
    if (start.stale) {
      // Edits kept in this browser whose base is no longer the latest revision: show them and ask.
      await viewer.loadLabels(start.stale.bytes);
      tools.resetHistory();
      app.measure.changed();
      app.autosave.version += 1; // the kept edits are on screen and not on the server
      app.autosave.setState(STATE.CONFLICT, {
        currentRevision: assignment.head_revision,
        base: start.stale.base,
        text:
          `This browser kept edits from ${new Date(start.stale.savedAt).toLocaleString()} that never reached the server. ` +
          `They are based on revision ${start.stale.base ?? "none"}, but the latest revision is ${assignment.head_revision}. ` +
          "Reload theirs to drop the kept edits, or keep mine to save the kept edits on top of the latest revision.",
      });
    }
    if (start.offer) offerPrelabel(start.offer);
  }
  refreshControls();
  app.measure.changed();
  viewer.emit("window", viewer.windowLevel());
  viewer.nv.createOnLocationChange();
  markReady();
  app.timing.ready = performance.now();
}

/**
 * The project's pre-label policy is "offered" and nothing is saved yet: the rater chooses to
 * start from the model's pre-label (saved at once as the first revision, source=prelabel) or
 * from a blank volume (the first save is source=manual).
 */
function offerPrelabel(offer) {
  const box = $("prelabel-offer");
  $("prelabel-model").textContent = offer.modelVersion ? ` (model version ${offer.modelVersion})` : "";
  box.hidden = false;
  $("start-from-model").addEventListener("click", async () => {
    if (app.autosave.version > 0 && !window.confirm("Replace what you have drawn with the model's pre-label?")) return;
    box.hidden = true;
    await app.viewer.loadLabels(offer.bytes);
    app.tools.resetHistory();
    app.measure?.changed();
    app.autosave.source = "prelabel";
    app.autosave.adoptUnsaved();
    app.startingPoint = { ...app.startingPoint, kind: "prelabel", offer: undefined };
    const model = offer.modelVersion ? ` (model version ${offer.modelVersion})` : "";
    $("starting-point").textContent = `the model's pre-label${model}: correct it; it is saved as your first revision`;
    message("Started from the model's pre-label.");
  });
  $("start-blank").addEventListener("click", () => {
    box.hidden = true;
    app.startingPoint = { ...app.startingPoint, kind: "empty", offer: undefined };
    $("starting-point").textContent = "an empty label volume (you chose to start blank)";
  });
}

runPage(main, { loadingText: "The scan could not be opened." });
