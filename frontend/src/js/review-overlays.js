// The review page's overlays: the consensus, its uncertainty, the ground truth and each
// rater's labels, one at a time over the scan, with their legends and opacity.
import { NVImage } from "@niivue/niivue";
import { api } from "./api.js";
import { leadApi } from "./lead-api.js";
import { gunzipIfNeeded, readChannels, summarise } from "./nifti.js";
import { METHOD_TEXT, app, message } from "./review-state.js";
import { $, showPageError } from "./session.js";

/** Uncertainty shown from (transparent below) and saturating at. */
const UNCERTAINTY_RANGE = [0.01, 0.5]; // a calibrated 2-1 vote of three raters is ~0.035
/** NiiVue colormap of the uncertainty overlay: orange to yellow, visible on grey MRI. */
const UNCERTAINTY_COLORMAP = "warm";

export function buildOverlays() {
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

export function setOverlayControlsEnabled(enabled) {
  for (const input of document.querySelectorAll("#overlay-list input")) input.disabled = !enabled;
}

async function labelBytes(overlay) {
  if (!app.cache.has(overlay.cacheKey)) app.cache.set(overlay.cacheKey, await overlay.load());
  return app.cache.get(overlay.cacheKey).slice(0); // NiiVue may keep or change what it is given
}

function uncertaintyIndex() {
  return app.uncertainty ? app.viewer.nv.volumes.indexOf(app.uncertainty.image) : -1;
}

export function setUncertaintyVisible(visible) {
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
export async function showOverlay(key) {
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

export function syncOpacityControl() {
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

export function renderLegend() {
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

