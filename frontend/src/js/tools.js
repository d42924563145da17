// Drawing tools: round and sphere brushes in millimetres, filled pen, eraser, threshold
// painting, flood fill (slice / 3D, limited to an intensity range), fill between slices,
// per-label locks, the ruler and the window from a region; previews of what a tool proposes
// (accepted or rejected); undo / redo. NiiVue turns the mouse into pen strokes; the brush
// shapes, the fills, interpolation and the history are ours (brush.js, fill.js,
// interpolate.js, threshold.js, history.js). Server operations are operations.js.
import { brushOffsets, SHAPES, stampLine, stepSize, stamp } from "./brush.js";
import { floodFill, PLANE_AXIS } from "./fill.js";
import { History } from "./history.js";
import { interpolateSlices } from "./interpolate.js";
import { labelKey } from "./palette.js";
import { rleDecode, rleEncode } from "./rle.js";
import { autoRange } from "./threshold.js";
import { OUTSIDE_SEED } from "./viewer.js";

export const TOOLS = {
  navigate: { name: "Navigate", hint: "Click to move the crosshair." },
  brush: { name: "Brush", hint: "Drag to paint the selected label with the round (or sphere) brush." },
  pen: { name: "Filled pen", hint: "Draw a closed outline in a slice; its inside is filled on release." },
  eraser: { name: "Eraser", hint: "Drag to erase (any unlocked label), round or sphere." },
  fill2d: { name: "Fill (slice)", hint: "Click: fill the connected region in this slice whose intensity is in the fill range." },
  fill3d: { name: "Fill (3D)", hint: "Click: fill the connected 3D region whose intensity is in the fill range." },
  ruler: { name: "Ruler", hint: "Drag in a slice to measure a distance in millimetres." },
  wlregion: { name: "Window from region", hint: "Drag a rectangle in a slice: the window/level becomes its 1–99 % intensities." },
};

export { SHAPES };

/** NiiVue's axCorSag (0 axial, 1 coronal, 2 sagittal) → the voxel axis held constant in that slice. */
const AXIS_OF_TILE = { 0: 2, 1: 1, 2: 0 };
const AXCORSAG_PLANE = { 0: "axial", 1: "coronal", 2: "sagittal" };
const PAINTING = new Set(["brush", "pen", "eraser"]);

export class Tools {
  /**
   * @param {import("./viewer.js").Viewer} viewer
   * @param {object} options
   * @param {Array<{value:number,name:string,color:string}>} options.labels the project's schema
   * @param {() => void} options.onEdit called after every change of the drawing
   * @param {(message: string) => void} options.onMessage short feedback for the user
   * @param {() => void} options.onChange tool, label or size changed (to refresh the controls)
   */
  constructor(viewer, { labels, onEdit, onMessage, onChange }) {
    this.viewer = viewer;
    this.nv = viewer.nv;
    this.labels = [...labels].sort((a, b) => a.value - b.value);
    this.onEdit = onEdit;
    this.onMessage = onMessage;
    this.onChange = onChange;
    this.tool = "navigate";
    this.label = this.labels[0]?.value ?? 1;
    this.shape = "disc";
    this.brushMm = this.minSpacing; // diameter: one voxel of the finest spacing
    this.threshold = false; // threshold painting: the brush paints only voxels in the range
    this.fillRange = { lo: null, hi: null }; // null: the automatic range at the seed (threshold.js)
    this.locked = new Set();
    this.readOnly = false;
    this.history = new History({ limit: 50 });
    this.lastFill = null;
    this.lastAutoRange = null; // the automatic range of the last fill or stroke
    this.lastStroke = null; // {axis, range} of the last pen stroke
    this.pending = null; // a previewed edit: {base, description, outline}
    this.measurements = [];
    this.offsetCache = new Map();
    this.stroke = null;
  }

  get minSpacing() {
    return Math.min(...this.viewer.spacing);
  }

  /** The brush diameter in voxels of the finest spacing (NiiVue's pen size; the review page's slider). */
  get penSize() {
    return Math.max(1, Math.round(this.brushMm / this.minSpacing));
  }

  /** Wire NiiVue's drawing events; call once the image and the drawing are loaded. */
  attach() {
    this.history.reset(this.viewer.bitmap);
    this.viewer.painter = this;
    this.nv.onDrawingChanged = (action) => {
      if (action === "draw") this.afterStroke();
    };
    this.nv.onMeasurementCompleted = (m) => {
      this.measurements.push({ distance: m.distance, startMM: Array.from(m.startMM), endMM: Array.from(m.endMM) });
      this.onMessage(`Distance: ${m.distance.toFixed(1)} mm.`);
      this.onChange();
    };
    this.nv.onDragRelease = (info) => {
      if (this.tool !== "wlregion" || info.tileIdx < 0) return;
      const range = this.viewer.windowFromBox(Array.from(info.voxStart), Array.from(info.voxEnd));
      this.lastRegion = { start: Array.from(info.voxStart), end: Array.from(info.voxEnd), range };
      this.onMessage(range ? `Window/level from the region: ${range[0].toFixed(1)} to ${range[1].toFixed(1)}.` : "The region has one intensity only: the window is unchanged.");
    };
    // Fill tools act on a click (not a drag) in a slice, after NiiVue moved the crosshair there.
    let down = null;
    this.viewer.canvas.addEventListener("mousedown", (event) => {
      down = event.button === 0 && !event.shiftKey ? [event.clientX, event.clientY] : null;
    });
    this.viewer.canvas.addEventListener("mouseup", (event) => {
      if (!down || event.button !== 0) return;
      const moved = Math.hypot(event.clientX - down[0], event.clientY - down[1]);
      down = null;
      if (moved > 4 || (this.tool !== "fill2d" && this.tool !== "fill3d") || this.pending) return;
      this.fillAtCrosshair(this.tool === "fill2d");
    });
    this.apply();
  }

  setReadOnly(readOnly) {
    this.readOnly = readOnly;
    if (readOnly) {
      if (this.pending) this.rejectPreview();
      this.tool = "navigate";
    }
    this.apply();
  }

  /** Editing is possible now (not read-only, no preview waiting); says why not otherwise. */
  canEdit() {
    if (this.readOnly) {
      this.onMessage("This assignment is read-only.");
      return false;
    }
    if (this.pending) {
      this.onMessage("Accept (Enter) or reject (Esc) the preview first.");
      return false;
    }
    return true;
  }

  setTool(tool) {
    if (!(tool in TOOLS)) throw new Error(`Unknown tool ${tool}`);
    if (this.readOnly && tool !== "navigate") {
      this.onMessage("This assignment is read-only.");
      return;
    }
    this.tool = tool;
    this.apply();
  }

  setLabel(value) {
    const label = this.labels.find((l) => l.value === value);
    if (!label && value !== OUTSIDE_SEED) return;
    this.label = value;
    if (!PAINTING.has(this.tool) && this.tool !== "fill2d" && this.tool !== "fill3d") this.tool = "brush";
    if (this.tool === "eraser") this.tool = "brush";
    this.setTool(this.tool);
    if (value === OUTSIDE_SEED) this.onMessage("Outside seeds (grow from seeds): paint around the structure; they are never saved.");
  }

  /** The label bound to number key ``n`` (1-9; 0 is the grow-from-seeds outside seed). */
  labelForKey(n) {
    if (n === 0) return OUTSIDE_SEED;
    return this.labels.find((label, index) => labelKey(label, index) === n)?.value ?? null;
  }

  // --- brush ---------------------------------------------------------------------------------

  /** Brush diameter in voxels of the finest spacing (the slider, the review page). */
  setPenSize(size) {
    this.setBrushMm(Math.max(1, Math.min(50, Math.round(size))) * this.minSpacing);
  }

  setBrushMm(mm) {
    const min = this.minSpacing;
    this.brushMm = Math.max(min, Math.min(50 * min, mm));
    this.apply();
  }

  /** ``]`` (+1) and ``[`` (-1): the next brush size (3D Slicer's keys). */
  stepBrush(direction) {
    this.setPenSize(stepSize(this.penSize, direction));
  }

  setShape(shape) {
    if (!(shape in SHAPES)) throw new Error(`Unknown brush shape ${shape}`);
    this.shape = shape;
    this.onMessage(`Brush: ${SHAPES[shape]}, ${this.brushMm.toFixed(1)} mm.`);
    this.onChange();
  }

  toggleShape() {
    this.setShape(this.shape === "disc" ? "sphere" : "disc");
  }

  setThreshold(on) {
    this.threshold = Boolean(on);
    const { lo, hi } = this.fillRange;
    const range = lo !== null && hi !== null ? `${lo.toFixed(1)}–${hi.toFixed(1)}` : "automatic at the start of each stroke";
    this.onMessage(this.threshold ? `Threshold painting on: the brush paints only intensities in the range (${range}).` : "Threshold painting off.");
    this.onChange();
  }

  toggleThreshold() {
    this.setThreshold(!this.threshold);
  }

  setFillRange(lo, hi) {
    this.fillRange = { lo: Number.isFinite(lo) ? lo : null, hi: Number.isFinite(hi) ? hi : null };
    this.onChange();
  }

  /** Set the range from the voxel under the crosshair (its tissue ± 2.5 noise sigmas). */
  rangeFromCrosshair() {
    const seed = this.viewer.crosshairVoxel();
    if (!seed) return null;
    const { image, slope, inter } = this.viewer.backgroundImage();
    const range = autoRange({ image, dims: this.viewer.dims, seed, axis: this.viewer.sliceAxis(), slope, inter });
    this.setFillRange(range.lo, range.hi);
    this.onMessage(`Intensity range ${range.lo.toFixed(1)}–${range.hi.toFixed(1)} (the voxel's tissue ± ${range.sigmas} × noise ${range.sigma.toFixed(1)}).`);
    return range;
  }

  // --- locks ---------------------------------------------------------------------------------

  setLocked(value, locked) {
    if (locked) this.locked.add(value);
    else this.locked.delete(value);
    const name = this.labels.find((l) => l.value === value)?.name ?? `label ${value}`;
    this.onMessage(locked ? `${name} is locked: no tool overwrites it.` : `${name} is unlocked.`);
    this.onChange();
  }

  toggleLock(value = this.label) {
    this.setLocked(value, !this.locked.has(value));
  }

  /** Whether a tool may write ``value`` over voxel ``i`` now: never over a locked label. */
  canWrite(i, value) {
    const old = this.viewer.bitmap[i];
    if (old === value) return true;
    if (this.locked.has(old)) return false;
    if (value !== 0 && this.stroke?.range) {
      const v = this.stroke.image[i] * this.stroke.slope + this.stroke.inter;
      if (v < this.stroke.range.lo || v > this.stroke.range.hi) return false;
    }
    return true;
  }

  /**
   * With threshold painting on, whole-volume edits (server operations, fill between slices)
   * write labels only on voxels in the range, as 3D Slicer's "editable intensity range"
   * masking does for every effect: the fixed range, else the last automatic one. Null when off.
   */
  maskRange() {
    if (!this.threshold) return null;
    let { lo, hi } = this.fillRange;
    if (lo === null || hi === null) {
      if (!this.lastAutoRange) return null;
      lo = lo ?? this.lastAutoRange.lo;
      hi = hi ?? this.lastAutoRange.hi;
    }
    const { image, slope, inter } = this.viewer.backgroundImage();
    return { axis: null, range: { lo: Math.min(lo, hi), hi: Math.max(lo, hi) }, image, slope, inter };
  }

  /** Run ``change`` with the threshold mask (canWrite) in force. */
  masked(change) {
    const saved = this.stroke;
    this.stroke = this.maskRange();
    try {
      return change();
    } finally {
      this.stroke = saved;
    }
  }

  // --- the painter NiiVue's pen calls (viewer.js) --------------------------------------------

  offsets(axCorSag) {
    const single = this.tool === "pen";
    const axis = AXIS_OF_TILE[axCorSag] ?? this.viewer.sliceAxis();
    const key = single ? "pen" : `${this.shape}:${this.brushMm}:${axis}`;
    if (!this.offsetCache.has(key)) {
      const offsets = single
        ? Int32Array.from([0, 0, 0])
        : brushOffsets({ diameterMm: this.brushMm, spacing: this.viewer.spacing, shape: this.shape, axis });
      this.offsetCache.set(key, offsets);
    }
    return this.offsetCache.get(key);
  }

  /** First point of a stroke: fix the threshold range for the whole stroke. */
  beginStroke(point, value, axCorSag) {
    const axis = AXIS_OF_TILE[axCorSag] ?? this.viewer.sliceAxis();
    this.stroke = { axis, range: null };
    if (this.threshold && value !== 0) {
      const { image, slope, inter } = this.viewer.backgroundImage();
      let { lo, hi } = this.fillRange;
      if (lo === null || hi === null) {
        const auto = autoRange({ image, dims: this.viewer.dims, seed: point, axis: this.shape === "disc" ? axis : null, slope, inter, sweep: false });
        lo = lo ?? auto.lo;
        hi = hi ?? auto.hi;
      }
      this.stroke = { axis, range: { lo: Math.min(lo, hi), hi: Math.max(lo, hi) }, image, slope, inter };
      if (this.fillRange.lo === null || this.fillRange.hi === null) this.lastAutoRange = { ...this.stroke.range };
    }
    this.lastStroke = { axis, range: this.stroke.range };
  }

  point(point, value, axCorSag) {
    if (Number.isNaN(this.nv.drawPenLocation[0]) || !this.stroke) this.beginStroke(point, value, axCorSag);
    stamp({ labels: this.viewer.bitmap, dims: this.viewer.dims, centre: point, offsets: this.offsets(axCorSag), value, canWrite: (i, v) => this.canWrite(i, v) });
  }

  line(from, to, value, axCorSag) {
    if (!this.stroke) this.beginStroke(from, value, axCorSag);
    stampLine({ labels: this.viewer.bitmap, dims: this.viewer.dims, from, to, offsets: this.offsets(axCorSag), value, canWrite: (i, v) => this.canWrite(i, v) });
  }

  /** NiiVue finished a stroke (or filled the pen's outline): keep locked voxels, record. */
  afterStroke() {
    if (this.tool === "pen" && (this.locked.size || this.stroke?.range)) {
      // NiiVue fills the outline's inside itself: put back what the tool may not write.
      const before = this.history.current();
      const bitmap = this.viewer.bitmap;
      let restored = 0;
      for (let i = 0; i < bitmap.length; i++) {
        if (bitmap[i] !== before[i]) {
          const value = bitmap[i];
          bitmap[i] = before[i];
          if (this.canWrite(i, value)) bitmap[i] = value;
          else restored++;
        }
      }
      if (restored) this.nv.refreshDrawing(true);
    }
    this.stroke = null;
    this.afterEdit();
  }

  /** Push the tool state into NiiVue. */
  apply() {
    const nv = this.nv;
    nv.opts.penSize = this.penSize;
    const tool = this.readOnly || this.pending ? "navigate" : this.tool;
    switch (tool) {
      case "brush":
        nv.setDrawingEnabled(true);
        nv.setPenValue(this.label, false);
        break;
      case "pen":
        nv.setDrawingEnabled(true);
        nv.setPenValue(this.label, true);
        break;
      case "eraser":
        nv.setDrawingEnabled(true);
        nv.setPenValue(0, false);
        break;
      default: // navigate, the fills, the ruler, the window region: no pen
        nv.setDrawingEnabled(false);
    }
    this.viewer.setLeftDrag({ ruler: "measurement", wlregion: "region" }[tool] ?? "crosshair");
    this.viewer.canvas.dataset.tool = this.tool;
    this.onChange();
  }

  afterEdit() {
    this.history.record(this.viewer.bitmap);
    this.onEdit();
    this.onChange();
  }

  // --- fills ---------------------------------------------------------------------------------

  /**
   * The intensity range of a fill at ``seed``: the fields when both are set, else the
   * automatic range (threshold.js) for that fill.
   */
  effectiveFillRange(seed, axis) {
    let { lo, hi } = this.fillRange;
    let auto = null;
    if (lo === null || hi === null) {
      const { image, slope, inter } = this.viewer.backgroundImage();
      auto = autoRange({ image, dims: this.viewer.dims, seed, axis, slope, inter, canWrite: (i) => this.canWrite(i, this.label) });
      lo = lo ?? auto.lo;
      hi = hi ?? auto.hi;
    }
    return { lo: Math.min(lo, hi), hi: Math.max(lo, hi), auto };
  }

  /**
   * Flood fill at the crosshair with the selected label.
   * @param {boolean} inSlice fill in the clicked slice only (else in 3D)
   * @returns {{filled:number, changed:number}|null}
   */
  fillAtCrosshair(inSlice) {
    if (!this.canEdit()) return null;
    const nv = this.nv;
    const tile = nv.screenSlices?.[nv.uiData.clickedTile];
    let plane = AXCORSAG_PLANE[tile?.axCorSag];
    if (!plane && this.viewer.view in PLANE_AXIS) plane = this.viewer.view;
    if (!plane) {
      this.onMessage("Click in a slice (not the 3D view) to fill.");
      return null;
    }
    return this.fillAt(this.viewer.crosshairVoxel(), inSlice ? plane : null);
  }

  /**
   * Flood fill from ``seed`` (RAS voxel) with the selected label; locked labels are walls.
   * @param {number[]} seed
   * @param {"axial"|"coronal"|"sagittal"|null} plane the slice to stay in, or null for 3D
   */
  fillAt(seed, plane) {
    if (!this.canEdit()) return null;
    const { image, slope, inter } = this.viewer.backgroundImage();
    const dims = this.viewer.dims;
    const axis = plane ? PLANE_AXIS[plane] : null;
    const seedValue = image[seed[0] + seed[1] * dims[0] + seed[2] * dims[0] * dims[1]] * slope + inter;
    const { lo, hi, auto } = this.effectiveFillRange(seed, axis);
    const result = floodFill({
      labels: this.viewer.bitmap,
      image,
      dims,
      seed,
      value: this.label,
      lo,
      hi,
      axis,
      slope,
      inter,
      canWrite: (i) => this.canWrite(i, this.label),
    });
    this.lastFill = { seed, plane, lo, hi, automatic: Boolean(auto), sigmas: auto?.sigmas ?? null, ...result };
    if (auto) this.lastAutoRange = { lo, hi }; // shown on the histogram; a slider moved next starts from it
    if (result.filled === 0) {
      this.onMessage(`Nothing filled: the clicked voxel (${seedValue.toFixed(1)}) is outside the fill range ${lo.toFixed(1)}–${hi.toFixed(1)} or locked.`);
      return result;
    }
    this.nv.refreshDrawing(true);
    this.nv.drawAddUndoBitmap();
    const how = auto ? `automatic range: the seed's tissue ± ${auto.sigmas} × noise` : "range";
    this.onMessage(`Filled ${result.filled} voxels ${plane ? `in the ${plane} slice` : "in 3D"} (${how}, ${lo.toFixed(1)}–${hi.toFixed(1)}).`);
    if (result.changed > 0) this.afterEdit();
    return result;
  }

  // --- fill between slices -------------------------------------------------------------------

  /**
   * Preview the selected label filled between the slices it is drawn on, along ``axis`` (the
   * voxel axis the slices are stacked along: that of the last stroke, else of the view).
   */
  interpolate(axis = null) {
    if (!this.canEdit()) return null;
    const along = axis ?? this.lastStroke?.axis ?? this.viewer.sliceAxis();
    const value = this.label;
    let result = null;
    this.preview(`Fill between slices (${["sagittal", "coronal", "axial"][along]})`, (bitmap) =>
      this.masked(() => {
        result = interpolateSlices({ labels: bitmap, dims: this.viewer.dims, spacing: this.viewer.spacing, value, axis: along, canWrite: (i, v) => this.canWrite(i, v) });
        return result.changed;
      }),
    );
    if (result && result.drawn.length < 2) this.onMessage("Fill between slices: draw the label on at least two slices (with empty slices between).");
    return result;
  }

  // --- previews and whole-volume edits --------------------------------------------------------

  /**
   * Show an edit as a preview (outlined), to be accepted (Enter) or rejected (Esc).
   * @param {string} description
   * @param {(bitmap: Uint8Array) => number} change writes the edit into the bitmap, returns voxels changed
   * @returns {boolean} whether a preview is shown (nothing changed: none)
   */
  preview(description, change) {
    if (!this.canEdit()) return false;
    const base = rleEncode(this.viewer.bitmap);
    const changed = change(this.viewer.bitmap);
    if (!changed) {
      rleDecode(base, this.viewer.bitmap);
      this.onMessage(`${description}: nothing to change.`);
      return false;
    }
    this.pending = { base, description, changed, outline: this.viewer.outline };
    this.viewer.setOutline(true); // the preview is drawn as outlines over the scan
    this.nv.refreshDrawing(true);
    this.apply();
    this.onMessage(`Preview: ${description}, ${changed} voxels. Enter accepts, Esc rejects.`);
    return true;
  }

  /** A whole new label volume (a server operation's answer) as a preview or as one undoable edit. */
  applyVolume(volume, { description, preview = false }) {
    const bitmap = this.viewer.bitmap;
    if (volume.length !== bitmap.length) throw new Error(`${description}: the answer has ${volume.length} voxels, the drawing ${bitmap.length}.`);
    const write = (target) =>
      this.masked(() => {
        let changed = 0;
        for (let i = 0; i < target.length; i++) {
          if (target[i] !== volume[i] && this.canWrite(i, volume[i])) {
            target[i] = volume[i];
            changed++;
          }
        }
        return changed;
      });
    if (preview) return this.preview(description, write) ? this.pending.changed : 0;
    if (!this.canEdit()) return 0;
    const changed = write(bitmap);
    if (changed) {
      this.nv.refreshDrawing(true);
      this.nv.drawAddUndoBitmap();
      this.afterEdit();
    }
    this.onMessage(`${description}: ${changed} voxels changed.`);
    return changed;
  }

  acceptPreview() {
    const pending = this.pending;
    if (!pending) return false;
    this.pending = null;
    this.viewer.setOutline(pending.outline);
    this.nv.refreshDrawing(true);
    this.nv.drawAddUndoBitmap();
    this.apply();
    this.afterEdit();
    this.onMessage(`Accepted: ${pending.description}.`);
    return true;
  }

  rejectPreview() {
    const pending = this.pending;
    if (!pending) return false;
    this.pending = null;
    rleDecode(pending.base, this.viewer.bitmap);
    this.viewer.setOutline(pending.outline);
    this.nv.refreshDrawing(true);
    this.nv.drawAddUndoBitmap();
    this.apply();
    this.onMessage(`Rejected: ${pending.description}.`);
    return true;
  }

  /** The labels as they are without a pending preview (what a save sends): null for the drawing itself. */
  committedBitmap() {
    return this.pending ? rleDecode(this.pending.base) : null;
  }

  // --- undo / redo ---------------------------------------------------------------------------

  undo() {
    if (this.pending) return this.rejectPreview();
    if (this.readOnly || !this.history.undo(this.viewer.bitmap)) return false;
    this.syncNiivue();
    return true;
  }

  redo() {
    if (this.readOnly || this.pending || !this.history.redo(this.viewer.bitmap)) return false;
    this.syncNiivue();
    return true;
  }

  /** After we changed the bitmap behind NiiVue's back: upload it and reset NiiVue's own undo state. */
  syncNiivue() {
    this.nv.refreshDrawing(true);
    this.nv.drawAddUndoBitmap();
    this.onEdit();
    this.onChange();
  }

  /** The drawing was replaced (revision loaded): start the history again. */
  resetHistory() {
    if (this.pending) {
      this.viewer.setOutline(this.pending.outline);
      this.pending = null;
      this.apply();
    }
    this.history.reset(this.viewer.bitmap);
    this.onChange();
  }
}
