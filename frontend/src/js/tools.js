// Drawing tools: brush, filled pen, eraser, flood fill (slice / 3D, limited to an intensity
// range), the label palette, brush size, and undo / redo. NiiVue draws the pen strokes; the
// fill and the undo/redo history are ours (fill.js, history.js).
import { floodFill, PLANE_AXIS } from "./fill.js";
import { History } from "./history.js";
import { labelKey } from "./palette.js";

export const TOOLS = {
  navigate: { name: "Navigate", hint: "Click to move the crosshair." },
  brush: { name: "Brush", hint: "Drag to paint the selected label." },
  pen: { name: "Filled pen", hint: "Draw a closed outline in a slice; its inside is filled on release." },
  eraser: { name: "Eraser", hint: "Drag to erase (any label)." },
  fill2d: { name: "Fill (slice)", hint: "Click: fill the connected region in this slice whose intensity is in the fill range." },
  fill3d: { name: "Fill (3D)", hint: "Click: fill the connected 3D region whose intensity is in the fill range." },
};

const AXCORSAG_PLANE = { 0: "axial", 1: "coronal", 2: "sagittal" };

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
    this.penSize = 1;
    this.fillRange = { lo: null, hi: null }; // null: seed intensity ± 10 % of the window
    this.readOnly = false;
    this.history = new History({ limit: 50 });
    this.lastFill = null;
  }

  /** Wire NiiVue's drawing events; call once the image and the drawing are loaded. */
  attach() {
    this.history.reset(this.viewer.bitmap);
    this.nv.onDrawingChanged = (action) => {
      if (action === "draw") this.afterEdit();
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
      if (moved > 4 || (this.tool !== "fill2d" && this.tool !== "fill3d")) return;
      this.fillAtCrosshair(this.tool === "fill2d");
    });
    this.apply();
  }

  setReadOnly(readOnly) {
    this.readOnly = readOnly;
    if (readOnly) this.tool = "navigate";
    this.apply();
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
    if (!label) return;
    this.label = value;
    if (this.tool === "navigate" || this.tool === "eraser") this.tool = "brush";
    this.setTool(this.tool);
  }

  /** The label bound to number key ``n`` (1-9): the schema's key (palette.js labelKey). */
  labelForKey(n) {
    return this.labels.find((label, index) => labelKey(label, index) === n)?.value ?? null;
  }

  setPenSize(size) {
    this.penSize = Math.max(1, Math.min(25, Math.round(size)));
    this.apply();
  }

  setFillRange(lo, hi) {
    this.fillRange = { lo: Number.isFinite(lo) ? lo : null, hi: Number.isFinite(hi) ? hi : null };
    this.onChange();
  }

  /** Push the tool state into NiiVue. */
  apply() {
    const nv = this.nv;
    nv.opts.penSize = this.penSize;
    switch (this.readOnly ? "navigate" : this.tool) {
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
      default: // navigate and the fill tools: a click moves the crosshair
        nv.setDrawingEnabled(false);
    }
    this.viewer.canvas.dataset.tool = this.tool;
    this.onChange();
  }

  afterEdit() {
    this.history.record(this.viewer.bitmap);
    this.onEdit();
    this.onChange();
  }

  /** The intensity range a fill at ``seedValue`` uses. */
  effectiveFillRange(seedValue) {
    let { lo, hi } = this.fillRange;
    if (lo === null || hi === null) {
      const wl = this.viewer.windowLevel();
      const tolerance = 0.1 * (wl ? wl.window : 1);
      lo = lo ?? seedValue - tolerance;
      hi = hi ?? seedValue + tolerance;
    }
    return [Math.min(lo, hi), Math.max(lo, hi)];
  }

  /**
   * Flood fill at the crosshair with the selected label.
   * @param {boolean} inSlice fill in the clicked slice only (else in 3D)
   * @returns {{filled:number, changed:number}|null}
   */
  fillAtCrosshair(inSlice) {
    if (this.readOnly) return null;
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
   * Flood fill from ``seed`` (RAS voxel) with the selected label.
   * @param {number[]} seed
   * @param {"axial"|"coronal"|"sagittal"|null} plane the slice to stay in, or null for 3D
   */
  fillAt(seed, plane) {
    const volume = this.viewer.volume;
    const image = volume.img2RAS();
    const hdr = volume.hdr;
    const dims = this.viewer.dims;
    const slope = hdr.scl_slope || 1;
    const inter = hdr.scl_inter || 0;
    const seedValue = image[seed[0] + seed[1] * dims[0] + seed[2] * dims[0] * dims[1]] * slope + inter;
    const [lo, hi] = this.effectiveFillRange(seedValue);
    const result = floodFill({
      labels: this.viewer.bitmap,
      image,
      dims,
      seed,
      value: this.label,
      lo,
      hi,
      axis: plane ? PLANE_AXIS[plane] : null,
      slope,
      inter,
    });
    this.lastFill = { seed, plane, lo, hi, ...result };
    if (result.filled === 0) {
      this.onMessage(`Nothing filled: the clicked voxel's intensity ${seedValue.toFixed(1)} is outside the fill range ${lo.toFixed(1)}–${hi.toFixed(1)}.`);
      return result;
    }
    this.nv.refreshDrawing(true);
    this.nv.drawAddUndoBitmap();
    this.onMessage(`Filled ${result.filled} voxels ${plane ? `in the ${plane} slice` : "in 3D"} (intensity ${lo.toFixed(1)}–${hi.toFixed(1)}).`);
    if (result.changed > 0) this.afterEdit();
    return result;
  }

  undo() {
    if (this.readOnly || !this.history.undo(this.viewer.bitmap)) return false;
    this.syncNiivue();
    return true;
  }

  redo() {
    if (this.readOnly || !this.history.redo(this.viewer.bitmap)) return false;
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
    this.history.reset(this.viewer.bitmap);
    this.onChange();
  }
}
