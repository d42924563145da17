// The intensity range of threshold painting and the fills, as a range over the background
// sequence's histogram: two sliders (lowest, highest) under a histogram drawn in a canvas,
// kept in step with the two number fields (empty = automatic at the seed, threshold.js).
import { histogram } from "./threshold.js";

const BINS = 128;

/**
 * @param {object} els {canvas, lo, hi, fieldLo, fieldHi} elements
 * @param {import("./viewer.js").Viewer} viewer
 * @param {import("./tools.js").Tools} tools
 * @returns {{refresh: () => void}} refresh(): redraw (the background or the range changed)
 */
export function wireRangeHistogram({ canvas, lo, hi, fieldLo, fieldHi }, viewer, tools) {
  let shown = null; // {image, counts, min, max}
  const compute = () => {
    const { image, slope, inter } = viewer.backgroundImage();
    if (shown?.image === image) return shown;
    const volume = viewer.volume;
    const h = histogram(image, { bins: BINS, min: volume.global_min, max: volume.global_max, slope, inter });
    shown = { image, ...h };
    for (const slider of [lo, hi]) {
      slider.min = String(h.min);
      slider.max = String(h.max);
      slider.step = String((h.max - h.min) / 500 || 1);
    }
    return shown;
  };
  const draw = () => {
    const h = compute();
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    // log counts: the background's huge peak would flatten the tissue's
    const logs = Array.from(h.counts, (c) => Math.log1p(c));
    const top = Math.max(...logs) || 1;
    const { lo: flo, hi: fhi } = tools.fillRange;
    const fixed = flo !== null && fhi !== null;
    const rlo = fixed ? flo : (tools.lastAutoRange?.lo ?? null);
    const rhi = fixed ? fhi : (tools.lastAutoRange?.hi ?? null);
    const x = (v) => ((v - h.min) / (h.max - h.min || 1)) * width;
    if (rlo !== null && rhi !== null) {
      ctx.fillStyle = "rgba(31, 111, 235, 0.18)";
      ctx.fillRect(x(Math.min(rlo, rhi)), 0, Math.max(1, x(Math.max(rlo, rhi)) - x(Math.min(rlo, rhi))), height);
    }
    const barWidth = width / BINS;
    for (let b = 0; b < BINS; b++) {
      const centre = h.min + ((b + 0.5) * (h.max - h.min)) / BINS;
      const inside = rlo !== null && rhi !== null && centre >= Math.min(rlo, rhi) && centre <= Math.max(rlo, rhi);
      ctx.fillStyle = inside ? "#1f6feb" : "#8a93a3";
      const bar = (logs[b] / top) * (height - 2);
      ctx.fillRect(b * barWidth, height - bar, Math.max(1, barWidth - 0.5), bar);
    }
  };
  // A slider moved while the range is automatic starts from the last automatic range (the
  // other bound stays where that fill put it), as widening a fill that stopped short.
  const fromSliders = (moved) => {
    const auto = tools.fillRange.lo === null || tools.fillRange.hi === null ? tools.lastAutoRange : null;
    let a = Number(lo.value);
    let b = Number(hi.value);
    if (auto && moved === hi) a = auto.lo;
    if (auto && moved === lo) b = auto.hi;
    tools.setFillRange(Math.min(a, b), Math.max(a, b));
  };
  lo.addEventListener("input", () => fromSliders(lo));
  hi.addEventListener("input", () => fromSliders(hi));
  const refresh = () => {
    if (!viewer.volume) return;
    const h = compute();
    const { lo: rlo, hi: rhi } = tools.fillRange;
    lo.value = String(rlo ?? tools.lastAutoRange?.lo ?? h.min);
    hi.value = String(rhi ?? tools.lastAutoRange?.hi ?? h.max);
    // a field typed in keeps its text; one set otherwise (sliders, the crosshair) shows the value
    const show = (field, value) => {
      if (value === null) {
        if (field.value !== "" && document.activeElement !== field) field.value = "";
      } else if (parseFloat(field.value) !== value) {
        field.value = String(Number(value.toFixed(2)));
      }
    };
    show(fieldLo, rlo);
    show(fieldHi, rhi);
    draw();
  };
  return { refresh };
}
