// Measurements in the viewer: the live volume of each label (in the palette), the island
// under the crosshair (its volume in mL), and the ruler's distances (NiiVue's measurement
// drag, tools.js). The arithmetic is label-stats.js.
import { formatMl, islandAt, labelCounts, voxelMl } from "./label-stats.js";
import { updatePalette } from "./palette.js";

export class Measurements {
  /**
   * @param {object} options
   * @param {import("./viewer.js").Viewer} options.viewer
   * @param {import("./tools.js").Tools} options.tools
   * @param {HTMLElement} options.palette the palette's list (palette.js renderPalette with controls)
   * @param {(text: string) => void} options.onIsland shows the island under the crosshair
   */
  constructor({ viewer, tools, palette, onIsland }) {
    this.viewer = viewer;
    this.tools = tools;
    this.palette = palette;
    this.onIsland = onIsland;
    this.volumes = {}; // value -> mL, for the tests and the benchmark
    this.island = null; // {value, voxels, ml} under the crosshair
    this.version = 0;
    this.cache = null; // {version, mask, value, voxels}
    this.pendingVolumes = null;
    this.pendingIsland = null;
  }

  /** The drawing changed: recompute the volumes (once per frame) and the island. */
  changed() {
    this.version++;
    this.cache = null;
    this.scheduleVolumes();
    this.scheduleIsland();
  }

  scheduleVolumes() {
    if (this.pendingVolumes) return;
    this.pendingVolumes = setTimeout(() => {
      this.pendingVolumes = null;
      this.refreshVolumes();
    }, 30);
  }

  refreshVolumes() {
    const bitmap = this.viewer.bitmap;
    if (!bitmap) return;
    const counts = labelCounts(this.tools.committedBitmap() ?? bitmap);
    const ml = voxelMl(this.viewer.spacing);
    const volumes = {};
    const text = new Map();
    for (const label of this.tools.labels) {
      volumes[label.value] = counts[label.value] * ml;
      text.set(label.value, formatMl(volumes[label.value]));
    }
    this.volumes = volumes;
    updatePalette(this.palette, { volumes: text, locked: this.tools.locked, display: this.viewer.labelDisplay });
  }

  /** Labels display or locks changed: redraw the palette's controls. */
  refreshControls() {
    const text = new Map(Object.entries(this.volumes).map(([value, ml]) => [Number(value), formatMl(ml)]));
    updatePalette(this.palette, { volumes: text, locked: this.tools.locked, display: this.viewer.labelDisplay });
  }

  scheduleIsland() {
    if (this.pendingIsland) return;
    this.pendingIsland = setTimeout(() => {
      this.pendingIsland = null;
      this.measureIsland();
    }, 60);
  }

  /** The island (6-connected voxels of one label) under the crosshair, and its volume. */
  measureIsland() {
    const vox = this.viewer.crosshairVoxel();
    const bitmap = this.viewer.bitmap;
    if (!vox || !bitmap) return null;
    const [nx, ny] = this.viewer.dims;
    const index = Math.round(vox[0]) + Math.round(vox[1]) * nx + Math.round(vox[2]) * nx * ny;
    const value = bitmap[index];
    if (!value) {
      this.island = null;
      this.onIsland("");
      return null;
    }
    if (!(this.cache && this.cache.version === this.version && this.cache.value === value && this.cache.mask[index])) {
      const found = islandAt(bitmap, this.viewer.dims, vox, { keepMembers: true });
      const mask = new Uint8Array(bitmap.length);
      for (const i of found.members) mask[i] = 1;
      this.cache = { version: this.version, mask, value, voxels: found.voxels };
    }
    const ml = this.cache.voxels * voxelMl(this.viewer.spacing);
    this.island = { value, voxels: this.cache.voxels, ml };
    const name = this.viewer.labelNames.get(value) ?? `label ${value}`;
    this.onIsland(`${formatMl(ml)} (${this.cache.voxels} voxels of ${name})`);
    return this.island;
  }
}
