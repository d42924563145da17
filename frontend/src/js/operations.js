// Server operations on the label volume: islands, margin (grow / shrink in mm), smooth, and
// grow from seeds. The page sends the current label volume as a revision save does (gzip
// NIfTI), the server answers the resulting volume (nothing is saved), and the answer becomes
// one undoable edit, or a preview to accept or reject (grow from seeds). Locked labels go as
// ``locked=`` and are also kept here, whatever the answer.
//
// POST /api/v1/assignments/<id>/operations/<operation>/?<params> (docs/editing.md).
import { api } from "./api.js";
import { gzipRle } from "./gzip-rle.js";
import { gunzipIfNeeded, readChannels, readHeader } from "./nifti.js";
import { OUTSIDE_SEED } from "./viewer.js";

/** What each action sends, for the help and the buttons. */
export const ACTIONS = {
  removeSmall: "Remove islands smaller than the size set (selected label)",
  keepLargest: "Keep the largest island (selected label)",
  keepAt: "Keep the island under the crosshair",
  marginGrow: "Grow the selected label by the margin (mm)",
  marginShrink: "Shrink the selected label by the margin (mm)",
  smooth: "Smooth the selected label (mm)",
  growSeeds: "Grow from seeds (preview)",
};

/** Decode a label volume answer (gzip or plain NIfTI-1) into voxels, in the file's order. */
export async function decodeLabelVolume(buffer) {
  const raw = await gunzipIfNeeded(new Uint8Array(buffer));
  const header = readHeader(raw);
  const [nx, ny, nz] = header.dims;
  const n = nx * ny * nz;
  if (header.datatype === 2 && header.slope === 1 && header.inter === 0) {
    return { dims: [nx, ny, nz], voxels: raw.slice(header.voxOffset, header.voxOffset + n) };
  }
  const [channel] = readChannels(raw).channels;
  return { dims: [nx, ny, nz], voxels: Uint8Array.from(channel.subarray(0, n), (v) => Math.round(v)) };
}

/** The [i0, i1, j0, j1, k0, k1] box (inclusive) of the voxels where ``test`` holds, or null. */
export function boundingBox(bitmap, dims, test) {
  const [nx, ny] = dims;
  const box = [Infinity, -Infinity, Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < bitmap.length; i++) {
    if (!test(bitmap[i])) continue;
    const x = i % nx;
    const y = ((i - x) / nx) % ny;
    const z = (i - x - y * nx) / (nx * ny);
    if (x < box[0]) box[0] = x;
    if (x > box[1]) box[1] = x;
    if (y < box[2]) box[2] = y;
    if (y > box[3]) box[3] = y;
    if (z < box[4]) box[4] = z;
    if (z > box[5]) box[5] = z;
  }
  return box[0] === Infinity ? null : box;
}

export class Operations {
  /**
   * @param {object} options
   * @param {number} options.assignmentId
   * @param {import("./tools.js").Tools} options.tools
   * @param {import("./channels.js").Channels|null} [options.channels] to name the background sequence
   * @param {(text: string) => void} options.onMessage
   * @param {() => void} [options.onChange]
   */
  constructor({ assignmentId, tools, channels = null, onMessage, onChange = () => {} }) {
    this.assignmentId = assignmentId;
    this.tools = tools;
    this.viewer = tools.viewer;
    this.channels = channels;
    this.onMessage = onMessage;
    this.onChange = onChange;
    this.minIslandMm3 = 20;
    this.marginMm = 1;
    this.smoothMm = 2;
    this.seedMarginMm = 5; // grow from seeds: the region is the outside seeds' box grown by this
    this.busy = false;
    this.last = null; // {operation, params, changed, serverChanged, serverMs, totalMs}
    document.body.dataset.operation = "idle";
  }

  lockedParam() {
    return [...this.tools.locked].sort((a, b) => a - b).join(",");
  }

  /**
   * Send the label volume (or ``bitmap``) to the server operation and apply its answer.
   * @returns {Promise<number>} voxels changed
   */
  async run(operation, params, { description, preview = false, bitmap = null, transform = null, keepSeeds = false }) {
    if (this.busy) {
      this.onMessage("An operation is running: wait for it.");
      return 0;
    }
    if (!this.tools.canEdit()) return 0;
    this.busy = true;
    document.body.dataset.operation = "running";
    this.onMessage(`${description}…`);
    this.onChange();
    const started = performance.now();
    try {
      const query = { ...params };
      const locked = this.lockedParam();
      if (locked) query.locked = locked;
      const nifti = await this.viewer.exportLabels(bitmap ?? this.viewer.bitmap, { keepSeeds });
      const response = await api.operation(this.assignmentId, operation, query, gzipRle(nifti));
      const { dims, voxels } = await decodeLabelVolume(await response.arrayBuffer());
      const expected = this.viewer.dims;
      if (dims.some((d, k) => d !== expected[k])) throw new Error(`the answer is ${dims.join("×")} voxels, the scan ${expected.join("×")}`);
      if (!keepSeeds) {
        // the outside seeds went as 0: they stay where they are
        const current = this.viewer.bitmap;
        for (let i = 0; i < voxels.length; i++) if (current[i] === OUTSIDE_SEED && voxels[i] === 0) voxels[i] = OUTSIDE_SEED;
      }
      const volume = transform ? transform(voxels) : voxels;
      const changed = this.tools.applyVolume(volume, { description, preview });
      this.last = {
        operation,
        params: query,
        changed,
        serverChanged: Number(response.headers.get("X-Changed-Voxels")),
        serverMs: Number(response.headers.get("X-Operation-Ms")),
        totalMs: performance.now() - started,
      };
      return changed;
    } catch (error) {
      this.last = { operation, params, error: error.message };
      this.onMessage(`${description} failed: ${error.message}`);
      return 0;
    } finally {
      this.busy = false;
      document.body.dataset.operation = "idle";
      this.onChange();
    }
  }

  removeSmallIslands() {
    const { label } = this.tools;
    return this.run("islands", { label, mode: "remove_small", min_mm3: this.minIslandMm3 }, { description: `Remove islands under ${this.minIslandMm3} mm³` });
  }

  keepLargestIsland() {
    return this.run("islands", { label: this.tools.label, mode: "keep_largest" }, { description: "Keep the largest island" });
  }

  keepIslandAtCrosshair() {
    const point = this.viewer.crosshairVoxel();
    const value = this.viewer.labelAt(point);
    if (!value) {
      this.onMessage("Keep island: put the crosshair on a labelled voxel.");
      return Promise.resolve(0);
    }
    return this.run("islands", { label: value, mode: "keep_at", point: point.join(",") }, { description: "Keep the island under the crosshair" });
  }

  margin(direction) {
    const mm = direction * Math.abs(this.marginMm);
    return this.run("margin", { label: this.tools.label, mm }, { description: `${mm > 0 ? "Grow" : "Shrink"} by ${Math.abs(mm)} mm` });
  }

  smooth() {
    return this.run("smooth", { label: this.tools.label, mm: this.smoothMm }, { description: `Smooth (${this.smoothMm} mm)` });
  }

  /**
   * Grow from seeds: every labelled voxel is a seed (two labels at least; the outside seeds,
   * key 0, count as one and come back as background), and the server grows them over the
   * unlabelled voxels of the region: the box of the outside seeds (else of all seeds) grown by
   * ``seedMarginMm``. Shown as a preview.
   */
  growFromSeeds() {
    const viewer = this.viewer;
    const bitmap = viewer.bitmap;
    const dims = viewer.dims;
    const present = new Set();
    for (let i = 0; i < bitmap.length; i++) if (bitmap[i]) present.add(bitmap[i]);
    for (const value of this.tools.locked) present.delete(value);
    if (present.size < 2) {
      this.onMessage("Grow from seeds: paint seeds of two labels at least (the structure, and around it the outside seed, key 0, or another label).");
      return Promise.resolve(0);
    }
    const outside = present.has(OUTSIDE_SEED);
    const box = boundingBox(bitmap, dims, outside ? (v) => v === OUTSIDE_SEED : (v) => v !== 0);
    const pad = viewer.spacing.map((s) => Math.ceil(this.seedMarginMm / s));
    // half-open voxel ranges [i0, i1), [j0, j1), [k0, k1)
    const roi = box.map((c, k) => (k % 2 ? Math.min(dims[k >> 1], c + 1 + pad[k >> 1]) : Math.max(0, c - pad[k >> 1])));
    const params = { roi: roi.join(",") };
    if (outside) params.outside = OUTSIDE_SEED; // a scratch value the server gives back as background
    const background = this.channels?.get?.(this.channels.background);
    if (background && !background.reference) params.channel = background.role;
    const transform = (voxels) => {
      for (let i = 0; i < voxels.length; i++) if (voxels[i] === OUTSIDE_SEED) voxels[i] = 0;
      return voxels;
    };
    this.lastRoi = roi;
    return this.run("grow", params, { description: "Grow from seeds", preview: true, transform, keepSeeds: true });
  }
}
