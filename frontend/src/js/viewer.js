// The NiiVue wrapper: views, window/level, zoom and pan, crosshair read-out, label display.
//
// NiiVue does the rendering and the pen; this module only configures it and offers the few
// operations the page needs. Voxel coordinates here are NiiVue's RAS voxel indices, which are
// the stored scan's own (i, j, k) indices: the server stores every scan reoriented to RAS+, so
// NiiVue's RAS permutation is the identity and the drawing bitmap is in the file's voxel order.
import { DRAG_MODE, MULTIPLANAR_TYPE, NVImage, Niivue, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import { percentilePresets, regionWindow } from "./presets.js";

export const VIEWS = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
  render: SLICE_TYPE.RENDER,
};
const VIEW_ORDER = ["multiplanar", "axial", "coronal", "sagittal", "render"];

/**
 * Window/level presets for MRI, from the background sequence's own intensities (presets.js):
 * percentiles, never CT numbers. ``range(volume)`` gives [lo, hi] in scaled units.
 */
export const WINDOW_PRESETS = {
  auto: { name: "Auto (robust 2–98 %)", range: (v) => [v.robust_min, v.robust_max] },
  full: { name: "Full range (min–max)", range: (v) => [v.global_min, v.global_max] },
  brain: { name: "Brain (0.5–99.5 % of the head)", range: (v) => imagePresets(v).brain },
  tight: { name: "Tight (20–99 % of the head)", range: (v) => imagePresets(v).tight },
  // halves of the robust range (the review page and the sequences' tests use them too)
  narrow: {
    name: "Narrow (half the auto width)",
    range: (v) => {
      const c = (v.robust_min + v.robust_max) / 2;
      const w = (v.robust_max - v.robust_min) / 4;
      return [c - w, c + w];
    },
  },
  bright: { name: "Bright tissue (upper half)", range: (v) => [(v.robust_min + v.robust_max) / 2, v.robust_max] },
  dark: { name: "Dark tissue (lower half)", range: (v) => [v.robust_min, (v.robust_min + v.robust_max) / 2] },
};
const PRESET_ORDER = Object.keys(WINDOW_PRESETS);

function imagePresets(volume) {
  return percentilePresets(volume.img, { slope: volume.hdr.scl_slope || 1, inter: volume.hdr.scl_inter || 0 });
}

/** The label value the grow-from-seeds tool paints "outside" seeds with; never saved. */
export const OUTSIDE_SEED = 255;
export const OUTSIDE_SEED_COLOR = "#e8e8e8";

/** The left button's drag mode for each kind of tool (viewer.setLeftDrag). */
export const LEFT_DRAG = { crosshair: DRAG_MODE.crosshair, measurement: DRAG_MODE.measurement, region: DRAG_MODE.roiSelection };

/** The NiiVue options the annotation viewer uses (also used by the bench's bare page). */
export const NIIVUE_OPTIONS = {
  backColor: [0, 0, 0, 1],
  crosshairColor: [0.2, 0.8, 1, 0.9],
  show3Dcrosshair: true,
  isNearestInterpolation: true, // show voxels as they are: what you paint is what is stored
  isColorbar: false,
  isOrientCube: false,
  dragAndDropEnabled: false,
  logLevel: "warn",
  sliceType: SLICE_TYPE.MULTIPLANAR,
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  multiplanarLayout: MULTIPLANAR_TYPE.GRID,
  // Mouse habits of ITK-SNAP / 3D Slicer: left = crosshair or paint, right-drag = window/level,
  // middle-drag or Shift+left-drag = pan; the wheel scrolls slices, Ctrl+wheel zooms (viewer.js).
  mouseEventConfig: {
    leftButton: { primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.pan },
    rightButton: DRAG_MODE.windowing,
    centerButton: DRAG_MODE.pan,
  },
  // Our shortcuts own the keyboard: switch off NiiVue's own view and clip-plane hot keys.
  viewModeHotKey: "",
  clipPlaneHotKey: "",
  cycleClipPlaneHotKey: "",
  penSize: 1,
  maxDrawUndoBitmaps: 4, // undo/redo is ours (history.js); NiiVue only needs its current state
};

/**
 * A NiiVue label colour table from the project's label schema (value 0 is transparent). Each
 * label's alpha is its own opacity (``display.get(value).opacity``, 0 when hidden); NiiVue
 * multiplies it by the drawing's opacity. The grow-from-seeds "outside" seeds get a pale grey.
 */
export function labelColormap(labels, display = new Map()) {
  const sorted = [...labels].sort((a, b) => a.value - b.value);
  const cmap = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"] };
  const add = (value, color, name, alpha) => {
    const hex = color.replace("#", "");
    cmap.R.push(parseInt(hex.slice(0, 2), 16));
    cmap.G.push(parseInt(hex.slice(2, 4), 16));
    cmap.B.push(parseInt(hex.slice(4, 6), 16));
    cmap.A.push(Math.round(255 * Math.min(1, Math.max(0, alpha))));
    cmap.I.push(value);
    cmap.labels.push(name);
  };
  for (const label of sorted) {
    if (label.value === OUTSIDE_SEED) continue;
    const shown = display.get(label.value);
    add(label.value, label.color, label.name, shown ? (shown.visible ? shown.opacity : 0) : 1);
  }
  add(OUTSIDE_SEED, OUTSIDE_SEED_COLOR, "outside seed", 1);
  return cmap;
}

const VIEW_KEY = "mriannot.view"; // the last view a user chose, kept in this browser

function rememberedView() {
  try {
    const view = window.localStorage.getItem(VIEW_KEY);
    return view in VIEWS ? view : "multiplanar";
  } catch {
    return "multiplanar";
  }
}

export class Viewer {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.view = rememberedView();
    this.nv = new Niivue({ ...NIIVUE_OPTIONS, sliceType: VIEWS[this.view] });
    this.preset = "auto";
    this.labelOpacity = 0.6;
    this.outline = false;
    this.labelsVisible = true;
    this.listeners = { location: [], window: [], view: [] };
    this.labelNames = new Map();
    this.timing = {}; // performance.now() marks of the loading steps (for the benchmark)
    // The scan's own image. ``volume`` is the background NiiVue shows, which may be another
    // sequence of the scan on the same grid (channels.js); the labels keep this one's header.
    this.reference = null;
    /** @type {{point: Function, line: Function}|null} paints the pen strokes (tools.js) */
    this.painter = null;
    this.labels = [];
    /** value -> {visible, opacity} of each label (per-label show/hide and opacity) */
    this.labelDisplay = new Map();
  }

  async attach() {
    await this.nv.attachToCanvas(this.canvas);
    // The pen strokes go to our painter when one is set (tools.js: round and sphere brushes in
    // mm, locked labels, threshold painting); NiiVue's square pen otherwise. NiiVue 0.69 draws
    // each pen segment from the new point (excluded) to the previous one, so the voxel under the
    // cursor when the stroke ends is never painted: both paths paint it.
    const drawPt = this.nv.drawPt.bind(this.nv);
    const drawPenLine = this.nv.drawPenLine.bind(this.nv);
    this.nv.drawPt = (x, y, z, penValue, bitmap = null) => {
      if (this.painter && !bitmap) this.painter.point([x, y, z], penValue, this.nv.drawPenAxCorSag);
      else drawPt(x, y, z, penValue, bitmap);
    };
    this.nv.drawPenLine = (ptA, ptB, penValue) => {
      if (this.painter) {
        this.painter.line(ptB, ptA, penValue, this.nv.drawPenAxCorSag);
        return;
      }
      drawPenLine(ptA, ptB, penValue);
      drawPt(ptA[0], ptA[1], ptA[2], penValue);
    };
    this.nv.onLocationChange = (data) => this.emit("location", this.describeLocation(data));
    this.nv.onIntensityChange = () => this.emit("window", this.windowLevel());
    // Ctrl+wheel zooms (3D Slicer); catch it before NiiVue scrolls the slice.
    this.canvas.parentElement.addEventListener(
      "wheel",
      (event) => {
        if (!(event.ctrlKey || event.metaKey)) return;
        event.preventDefault();
        event.stopPropagation();
        this.zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15);
      },
      { capture: true, passive: false },
    );
  }

  on(kind, callback) {
    this.listeners[kind].push(callback);
  }

  emit(kind, payload) {
    for (const callback of this.listeners[kind]) callback(payload);
  }

  /** Load the scan alone from .nii.gz bytes (the stored, canonical RAS+ image). */
  async loadImage(bytes, name = "scan.nii.gz") {
    await this.nv.loadFromArrayBuffer(bytes, name);
    this.volume = this.nv.volumes[0];
    this.reference = this.volume;
    this.preset = "auto"; // NiiVue opens with the robust range, which is our "auto" preset
  }

  /**
   * Open the scan and its labels with one first frame: both files are parsed side by side, and
   * the frame NiiVue would draw between adding the image and loading the drawing is skipped
   * (in software GL a 1 mm multiplanar + 3D frame takes seconds).
   * @param {ArrayBuffer} imageBytes the stored scan (.nii.gz)
   * @param {ArrayBuffer|Uint8Array|null} labelBytes its labels, or null for an empty drawing
   */
  async loadScan(imageBytes, labelBytes) {
    const [image, labels] = await Promise.all([
      NVImage.loadFromUrl({ url: "scan.nii.gz", name: "scan.nii.gz", buffer: imageBytes }),
      labelBytes ? this.parseLabels(labelBytes) : null,
    ]);
    this.timing.parsed = performance.now();
    this.nv.drawScene = () => {}; // an own property hides NiiVue's method for a moment
    try {
      this.nv.addVolume(image);
    } finally {
      delete this.nv.drawScene;
    }
    this.volume = this.nv.volumes[0];
    this.reference = this.volume;
    this.preset = "auto"; // NiiVue opens with the robust range, which is our "auto" preset
    if (labels) {
      if (!this.nv.loadDrawing(labels)) throw new Error("The label volume does not match the scan's grid; it cannot be shown.");
    } else {
      this.nv.createEmptyDrawing();
      this.nv.drawScene();
    }
  }

  parseLabels(bytes) {
    const buffer = bytes instanceof ArrayBuffer ? bytes : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    return NVImage.loadFromUrl({ url: "labels.nii.gz", name: "labels.nii.gz", buffer });
  }

  /** Replace the drawing with a label volume (NIfTI bytes on the scan's grid), or an empty one. */
  async loadLabels(bytes) {
    if (!bytes) {
      this.nv.createEmptyDrawing();
      return true;
    }
    const ok = this.nv.loadDrawing(await this.parseLabels(bytes));
    if (!ok) throw new Error("The label volume does not match the scan's grid; it cannot be shown.");
    return ok;
  }

  /**
   * The drawing as NIfTI bytes (uint8, the scan's header and affine), as NiiVue writes it: what
   * ``nv.saveImage({isSaveDrawing: true})`` does, with the scan's own image as the header even
   * when another sequence is the background. ``bitmap``: another label volume on the same grid
   * (the edits before a pending preview) instead of the drawing. The grow-from-seeds outside
   * seeds are sent as 0 unless ``keepSeeds``.
   */
  async exportLabels(bitmap = null, { keepSeeds = false } = {}) {
    const image = this.reference ?? this.nv.volumes[0];
    let source = bitmap ?? this.nv.drawBitmap;
    if (source && !keepSeeds && source.includes(OUTSIDE_SEED)) {
      // grow-from-seeds "outside" seeds are a tool's scratch, never labels
      source = source.map((v) => (v === OUTSIDE_SEED ? 0 : v));
    }
    const bytes = image && source ? await image.saveToDisk("", source) : null;
    if (!(bytes instanceof Uint8Array)) throw new Error("There is no drawing to save.");
    return bytes;
  }

  /** Run NiiVue calls that each draw a frame (addVolume, setVolume, removeVolume…) with one frame at the end. */
  batch(action) {
    this.nv.drawScene = () => {}; // an own property hides NiiVue's method for a moment
    try {
      action();
    } finally {
      delete this.nv.drawScene;
    }
    this.nv.drawScene();
  }

  /** The drawing bitmap (RAS voxel order, x fastest): read it, or write it then call refresh(). */
  get bitmap() {
    return this.nv.drawBitmap;
  }

  refreshDrawing() {
    this.nv.refreshDrawing(true);
  }

  get dims() {
    const d = this.nv.back.dimsRAS;
    return [d[1], d[2], d[3]];
  }

  /** Millimetres per voxel along the stored grid's i, j, k (the drawing's x, y, z). */
  get spacing() {
    const p = (this.reference ?? this.nv.back).pixDimsRAS;
    return [Math.abs(p[1]) || 1, Math.abs(p[2]) || 1, Math.abs(p[3]) || 1];
  }

  /**
   * The background sequence's voxels (the drawing's order) and their scaling: what threshold
   * painting, the fills and the presets read.
   */
  backgroundImage() {
    const volume = this.volume;
    return { image: volume.img2RAS(), slope: volume.hdr.scl_slope || 1, inter: volume.hdr.scl_inter || 0 };
  }

  setLabelSchema(labels) {
    this.labels = labels;
    this.labelNames = new Map(labels.map((l) => [l.value, l.name]));
    this.labelNames.set(OUTSIDE_SEED, "outside seed");
    for (const label of labels) {
      if (!this.labelDisplay.has(label.value)) this.labelDisplay.set(label.value, { visible: true, opacity: 1 });
    }
    this.nv.setDrawColormap(labelColormap(labels, this.labelDisplay));
  }

  /** Show or hide one label, or set its own opacity (0..1); the drawing's opacity scales it. */
  setLabelDisplay(value, { visible, opacity } = {}) {
    const current = this.labelDisplay.get(value) ?? { visible: true, opacity: 1 };
    const next = {
      visible: visible ?? current.visible,
      opacity: opacity === undefined ? current.opacity : Math.min(1, Math.max(0, opacity)),
    };
    this.labelDisplay.set(value, next);
    this.nv.setDrawColormap(labelColormap(this.labels, this.labelDisplay));
    this.emit("view", this);
  }

  /** The left button's drag mode: "crosshair" (and painting), "measurement" (ruler), "region" (a rectangle). */
  setLeftDrag(kind) {
    const config = this.nv.getMouseEventConfig() ?? NIIVUE_OPTIONS.mouseEventConfig;
    const primary = LEFT_DRAG[kind] ?? DRAG_MODE.crosshair;
    if (config.leftButton.primary === primary) return;
    this.nv.setMouseEventConfig({ ...config, leftButton: { ...config.leftButton, primary } });
  }

  // --- views ------------------------------------------------------------------------------

  setView(view) {
    if (!(view in VIEWS)) throw new Error(`Unknown view ${view}`);
    this.view = view;
    this.nv.setSliceType(VIEWS[view]);
    try {
      window.localStorage.setItem(VIEW_KEY, view);
    } catch {
      // private mode: the view is simply not remembered
    }
    this.emit("view", this);
  }

  cycleView() {
    this.setView(VIEW_ORDER[(VIEW_ORDER.indexOf(this.view) + 1) % VIEW_ORDER.length]);
  }

  /** The axis that a slice step moves along in the current view (0 = x, 1 = y, 2 = z). */
  sliceAxis() {
    return { sagittal: 0, coronal: 1 }[this.view] ?? 2;
  }

  moveSlice(step) {
    const delta = [0, 0, 0];
    delta[this.sliceAxis()] = step;
    this.nv.moveCrosshairInVox(...delta);
  }

  // --- zoom and pan -------------------------------------------------------------------------

  zoomBy(factor) {
    const scene = this.nv.scene;
    const current = scene.pan2Dxyzmm[3];
    const zoom = Math.min(16, Math.max(0.5, current * factor));
    const change = current - zoom;
    const mm = this.nv.frac2mm(scene.crosshairPos);
    scene.pan2Dxyzmm[0] += change * mm[0];
    scene.pan2Dxyzmm[1] += change * mm[1];
    scene.pan2Dxyzmm[2] += change * mm[2];
    scene.pan2Dxyzmm[3] = zoom;
    if (this.view === "render") scene.volScaleMultiplier = Math.min(4, Math.max(0.5, scene.volScaleMultiplier * factor));
    this.nv.drawScene();
    this.emit("view", this);
  }

  resetView() {
    this.nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
    this.nv.scene.volScaleMultiplier = 1;
    this.nv.setRenderAzimuthElevation(110, 10);
    this.nv.drawScene();
    this.emit("view", this);
  }

  zoom() {
    return this.nv.scene.pan2Dxyzmm[3];
  }

  // --- window / level -----------------------------------------------------------------------

  applyPreset(name) {
    const preset = WINDOW_PRESETS[name];
    if (!preset || !this.volume) return;
    const [lo, hi] = preset.range(this.volume);
    this.preset = name;
    this.setWindow(lo, hi);
  }

  nextPreset() {
    const next = PRESET_ORDER[(PRESET_ORDER.indexOf(this.preset) + 1) % PRESET_ORDER.length];
    this.applyPreset(next);
    return next;
  }

  /** Window/level from a box of voxels (a rectangle drawn in a slice): its 1–99 % intensities. */
  windowFromBox(a, b) {
    const { image, slope, inter } = this.backgroundImage();
    const range = regionWindow(image, this.dims, a, b, { slope, inter });
    if (!range) return null;
    this.preset = "region";
    this.setWindow(range[0], range[1]);
    return range;
  }

  setWindow(lo, hi) {
    if (!(hi > lo)) hi = lo + 1;
    this.volume.cal_min = lo;
    this.volume.cal_max = hi;
    this.nv.updateGLVolume();
    this.emit("window", this.windowLevel());
  }

  /** {min, max, window, level} of the displayed intensity range. */
  windowLevel() {
    const v = this.volume;
    if (!v) return null;
    return { min: v.cal_min, max: v.cal_max, window: v.cal_max - v.cal_min, level: (v.cal_max + v.cal_min) / 2 };
  }

  // --- labels display -----------------------------------------------------------------------

  setLabelOpacity(opacity) {
    this.labelOpacity = opacity;
    this.applyLabelDisplay();
  }

  setOutline(outline) {
    this.outline = outline;
    this.applyLabelDisplay();
  }

  setLabelsVisible(visible) {
    this.labelsVisible = visible;
    this.applyLabelDisplay();
  }

  /** Push opacity / outline / visibility to NiiVue; ``redraw: false`` before the first frame. */
  applyLabelDisplay({ redraw = true } = {}) {
    const nv = this.nv;
    if (!this.labelsVisible) {
      nv.drawRimOpacity = -1;
      nv.drawOpacity = 0;
    } else if (this.outline) {
      // NiiVue paints a label's rim at drawRimOpacity and its inside at drawOpacity (which must
      // stay above 0 for the rim to be drawn): a nearly transparent inside gives an outline.
      nv.drawRimOpacity = Math.max(this.labelOpacity, 0.05);
      nv.drawOpacity = 0.001;
    } else {
      nv.drawRimOpacity = -1;
      nv.drawOpacity = this.labelOpacity;
    }
    if (redraw) nv.drawScene();
  }

  // --- crosshair ----------------------------------------------------------------------------

  /** Crosshair voxel (RAS indices), or null before a volume is loaded. */
  crosshairVoxel() {
    if (!this.nv.volumes.length) return null;
    return Array.from(this.nv.frac2vox(this.nv.scene.crosshairPos));
  }

  setCrosshairVoxel(vox) {
    this.nv.scene.crosshairPos = this.nv.vox2frac(vox);
    this.nv.createOnLocationChange();
    this.nv.drawScene();
  }

  labelAt(vox) {
    const [nx, ny] = this.dims;
    const bitmap = this.bitmap;
    return bitmap ? bitmap[vox[0] + vox[1] * nx + vox[2] * nx * ny] : 0;
  }

  describeLocation(data) {
    const vox = Array.from(data.vox);
    const mm = Array.from(data.mm).slice(0, 3);
    const value = data.values?.[0]?.value;
    const label = this.labelAt(vox);
    return { vox, mm, value, label, labelName: label ? this.labelNames.get(label) || `label ${label}` : "" };
  }
}
