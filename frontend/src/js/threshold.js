// Intensity ranges for threshold painting and the fills: the automatic range at a seed voxel,
// the image's noise, and its histogram.
//
// Pure: typed arrays in the drawing's voxel order (x fastest), intensities in scaled units
// (raw * slope + inter). docs/editing.md ("Tools in the browser") says why the rule is what it is.
//
// The automatic range is the seed's tissue ± 2.5 noise sigmas:
// - sigma is the image's noise, estimated once per image from the residual of each voxel
//   against the mean of its 6 face neighbours (1.4826 * MAD / sqrt(7/6)) over the
//   foreground: smooth changes (bias field, wide structures) cancel, edges are outliers that
//   the median ignores. On simulated scans it is within 20 % of the true noise.
// - the centre is the median of the seed's 3x3x3 neighbours that lie within 3 sigma of the
//   seed (its own tissue, not the one across an edge), so one noisy seed voxel does not
//   shift the range; the seed's own intensity is always inside.
// - a fill in 3D tries 1.5, 2, 2.5 and 3 sigmas and keeps the widest that does not make the
//   region jump (more than 3x the voxels of the step before: it leaked through a partial-volume
//   bridge into the next tissue).
// The old rule, the seed ± 10 % of the display window, depends on how the window is set and is
// narrower than the noise as soon as the window is narrowed: it filled 2 voxels of white matter.
import { floodFill } from "./fill.js";

export const SIGMAS_2D = 2.5;
export const SIGMAS_3D = [1.5, 2, 2.5, 3];
const LEAK_RATIO = 3;
const LEAK_MIN_VOXELS = 30;

const noiseCache = new WeakMap();

function scaler(slope, inter) {
  const s = slope === 0 || !Number.isFinite(slope) ? 1 : slope;
  const o = Number.isFinite(inter) ? inter : 0;
  return (v) => v * s + o;
}

function median(values) {
  if (!values.length) return NaN;
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The [p, q] quantiles (0..1) of a Float64Array-sortable list. */
function quantiles(values, ps) {
  const sorted = Float64Array.from(values).sort();
  return ps.map((p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(p * (sorted.length - 1))))]);
}

/**
 * The image's noise sigma (scaled units), on a subsample of the foreground. Cached per image array.
 * @param {ArrayLike<number>} image
 * @param {number[]} dims
 * @param {{slope?: number, inter?: number}} [scale]
 */
export function noiseSigma(image, dims, { slope = 1, inter = 0 } = {}) {
  const cached = typeof image === "object" ? noiseCache.get(image) : undefined;
  if (cached !== undefined) return cached;
  const [nx, ny, nz] = dims;
  const nxy = nx * ny;
  const value = scaler(slope, inter);
  // A sample of about 200 000 interior voxels, on a regular lattice.
  const interior = Math.max(1, (nx - 2) * (ny - 2) * (nz - 2));
  const step = Math.max(1, Math.round(Math.cbrt(interior / 200000)));
  const sample = [];
  for (let z = 1; z < nz - 1; z += step) {
    for (let y = 1; y < ny - 1; y += step) {
      for (let x = 1; x < nx - 1; x += step) sample.push(value(image[x + y * nx + z * nxy]));
    }
  }
  let sigma = 0;
  if (sample.length > 8) {
    const [lo, hi] = quantiles(sample, [0.02, 0.98]);
    const floor = lo + 0.3 * (hi - lo); // the foreground: above the dark background
    const residuals = [];
    for (let z = 1; z < nz - 1; z += step) {
      for (let y = 1; y < ny - 1; y += step) {
        for (let x = 1; x < nx - 1; x += step) {
          const i = x + y * nx + z * nxy;
          const v = value(image[i]);
          if (v <= floor) continue;
          const mean =
            (value(image[i - 1]) + value(image[i + 1]) + value(image[i - nx]) + value(image[i + nx]) + value(image[i - nxy]) + value(image[i + nxy])) / 6;
          residuals.push(v - mean);
        }
      }
    }
    if (residuals.length > 8) {
      const m = median(residuals);
      const mad = median(residuals.map((r) => Math.abs(r - m)));
      sigma = (1.4826 * mad) / Math.sqrt(7 / 6);
    }
    if (!(sigma > 0)) sigma = 0.01 * (hi - lo) || 1;
  } else {
    sigma = 1;
  }
  if (typeof image === "object") noiseCache.set(image, sigma);
  return sigma;
}

/** The seed's tissue level: median of its 3x3x3 neighbours within 3 sigma of the seed. */
export function seedCentre(image, dims, seed, sigma, { slope = 1, inter = 0 } = {}) {
  const [nx, ny, nz] = dims;
  const value = scaler(slope, inter);
  const [sx, sy, sz] = seed.map((c) => Math.round(c));
  const v0 = value(image[sx + sy * nx + sz * nx * ny]);
  const near = [];
  for (let z = Math.max(0, sz - 1); z <= Math.min(nz - 1, sz + 1); z++) {
    for (let y = Math.max(0, sy - 1); y <= Math.min(ny - 1, sy + 1); y++) {
      for (let x = Math.max(0, sx - 1); x <= Math.min(nx - 1, sx + 1); x++) {
        const v = value(image[x + y * nx + z * nx * ny]);
        if (Math.abs(v - v0) <= 3 * sigma) near.push(v);
      }
    }
  }
  return { centre: near.length ? median(near) : v0, seedValue: v0 };
}

/**
 * The automatic intensity range of a fill (or a threshold stroke) at ``seed``.
 * @param {object} args
 * @param {ArrayLike<number>} args.image
 * @param {number[]} args.dims
 * @param {number[]} args.seed voxel
 * @param {number|null} [args.axis] the voxel axis a fill in a slice holds constant; null: a 3D fill
 * @param {number} [args.slope]
 * @param {number} [args.inter]
 * @param {(i: number) => boolean} [args.canWrite] walls of the fill (locked labels)
 * @param {boolean} [args.sweep] 3D only: try several widths and stop before a leak (default true)
 * @returns {{lo: number, hi: number, sigma: number, sigmas: number, centre: number}}
 */
export function autoRange({ image, dims, seed, axis = null, slope = 1, inter = 0, canWrite = null, sweep = true }) {
  const sigma = noiseSigma(image, dims, { slope, inter });
  const { centre, seedValue } = seedCentre(image, dims, seed, sigma, { slope, inter });
  const range = (k) => ({ lo: Math.min(centre - k * sigma, seedValue), hi: Math.max(centre + k * sigma, seedValue), sigma, sigmas: k, centre });
  if (axis !== null || !sweep) return range(SIGMAS_2D);
  // 3D: widen until the region jumps (a leak), and keep the step before it.
  const scratch = { length: dims[0] * dims[1] * dims[2] };
  let best = null;
  let previous = 0;
  for (const k of SIGMAS_3D) {
    const r = range(k);
    const limit = previous >= LEAK_MIN_VOXELS ? LEAK_RATIO * previous : Infinity;
    const { filled, leaked } = floodFill({
      labels: scratch,
      image,
      dims,
      seed,
      value: 1,
      lo: r.lo,
      hi: r.hi,
      axis: null,
      slope,
      inter,
      canWrite,
      dryRun: true,
      limit,
    });
    if (best && (leaked || (filled > LEAK_RATIO * previous && filled > LEAK_MIN_VOXELS))) break;
    best = r;
    previous = filled;
  }
  return best;
}

/**
 * A histogram of the image (scaled units) over [min, max] in ``bins`` bins, on a subsample.
 * @returns {{counts: Uint32Array, min: number, max: number}}
 */
export function histogram(image, { bins = 128, min, max, slope = 1, inter = 0, maxSamples = 1_000_000 } = {}) {
  const value = scaler(slope, inter);
  const n = image.length;
  const step = Math.max(1, Math.floor(n / maxSamples));
  if (min === undefined || max === undefined) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i += step) {
      const v = value(image[i]);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    min = min ?? lo;
    max = max ?? hi;
  }
  const counts = new Uint32Array(bins);
  const width = (max - min) / bins || 1;
  for (let i = 0; i < n; i += step) {
    const b = Math.floor((value(image[i]) - min) / width);
    if (b >= 0 && b < bins) counts[b]++;
    else if (b === bins) counts[bins - 1]++;
  }
  return { counts, min, max };
}
