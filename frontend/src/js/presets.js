// Window/level presets for MRI, from the scan's own intensities (an MRI has no Hounsfield
// scale, so CT windows such as "brain", "subdural" or "stroke" at fixed numbers mean nothing
// here). Every preset is a pair of percentiles of the background sequence:
//
// - auto:  NiiVue's robust range, 2–98 % of all voxels (zeros ignored when most are zero);
// - full:  minimum to maximum;
// - brain: 0.5–99.5 % of the head: the voxels above the dark background, i.e. above 15 % of the
//   way from the 2nd to the 99.5th percentile of all voxels (the background is the darkest few
//   per cent of any head scan; Otsu's threshold, tried first, cuts into CSF on T1w);
// - tight: 20–99 % of the head: the darkest fifth (CSF on T1w, the edges) goes black and the
//   grey/white contrast is spread over the whole grey scale.
// And a window from a drawn region: 1–99 % of the voxels of a rectangle in a slice.
//
// Pure (the percentile arithmetic); viewer.js applies them.

const presetCache = new WeakMap();

function scaled(image, slope, inter) {
  const s = slope === 0 || !Number.isFinite(slope) ? 1 : slope;
  const o = Number.isFinite(inter) ? inter : 0;
  return (i) => image[i] * s + o;
}

/** The q-quantile (0..1) of a sorted Float64Array. */
function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const at = Math.min(sorted.length - 1, Math.max(0, q * (sorted.length - 1)));
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/** The intensity above which a voxel is in the head (sorted values of all voxels). */
export function headFloor(sorted) {
  const p2 = quantile(sorted, 0.02);
  return p2 + 0.15 * (quantile(sorted, 0.995) - p2);
}

/**
 * The presets of an image: {full, brain, tight} as [lo, hi] in scaled units (auto is NiiVue's).
 * Cached per image array.
 * @param {ArrayLike<number>} image
 * @param {{slope?: number, inter?: number, maxSamples?: number}} [options]
 */
export function percentilePresets(image, { slope = 1, inter = 0, maxSamples = 400_000 } = {}) {
  const cached = typeof image === "object" ? presetCache.get(image) : undefined;
  if (cached) return cached;
  const value = scaled(image, slope, inter);
  const step = Math.max(1, Math.floor(image.length / maxSamples));
  const sample = [];
  for (let i = 0; i < image.length; i += step) {
    const v = value(i);
    if (Number.isFinite(v)) sample.push(v);
  }
  const all = Float64Array.from(sample).sort();
  const floor = headFloor(all);
  const head = all.subarray(all.findIndex((v) => v > floor));
  const fg = head.length > 16 ? head : all;
  const result = {
    full: [all[0], all[all.length - 1]],
    brain: [quantile(fg, 0.005), quantile(fg, 0.995)],
    tight: [quantile(fg, 0.2), quantile(fg, 0.99)],
  };
  if (typeof image === "object") presetCache.set(image, result);
  return result;
}

/**
 * The window of a box of voxels (a rectangle in one slice): its 1–99 % intensities.
 * @param {ArrayLike<number>} image
 * @param {number[]} dims
 * @param {number[]} a one corner (voxel)
 * @param {number[]} b the opposite corner
 * @returns {[number, number]|null} null when the box holds one intensity only
 */
export function regionWindow(image, dims, a, b, { slope = 1, inter = 0 } = {}) {
  const value = scaled(image, slope, inter);
  const [nx, ny] = dims;
  const lo = [0, 1, 2].map((k) => Math.max(0, Math.min(Math.round(a[k]), Math.round(b[k]))));
  const hi = [0, 1, 2].map((k) => Math.min(dims[k] - 1, Math.max(Math.round(a[k]), Math.round(b[k]))));
  const values = [];
  for (let z = lo[2]; z <= hi[2]; z++) {
    for (let y = lo[1]; y <= hi[1]; y++) {
      for (let x = lo[0]; x <= hi[0]; x++) values.push(value(x + y * nx + z * nx * ny));
    }
  }
  const sorted = Float64Array.from(values).sort();
  const range = [quantile(sorted, 0.01), quantile(sorted, 0.99)];
  return range[1] > range[0] ? range : null;
}
