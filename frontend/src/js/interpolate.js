// Fill between slices: shape-based interpolation of one label along one voxel axis, as 3D
// Slicer's "Fill between slices" and ITK-SNAP's interpolation do.
//
// Pure: typed arrays in the drawing's voxel order (x fastest). The slices along ``axis`` that
// hold the label are the drawn ones; between two drawn slices with empty slices in between,
// each empty slice gets the label where the linear blend of the two drawn slices' signed
// distance maps (in millimetres, exact Euclidean, in-plane spacing) is inside (Raya and
// Udupa's shape-based interpolation). A shape that moves, grows or shrinks between the drawn
// slices is followed; a label missing from a slice beyond the first and last drawn slices is
// left alone. NiiVue 0.69's interpolateMaskSlices blends only the first and last drawn slice,
// so it is not used.

const INF = 1e20;

/** 1-D squared distance transform (Felzenszwalb & Huttenlocher) of f (length n), spacing s. */
function dt1d(f, n, s, d, v, z) {
  const s2 = s * s;
  const meet = (q, p) => (f[q] + s2 * q * q - (f[p] + s2 * p * p)) / (2 * s2 * (q - p));
  let k = 0;
  v[0] = 0;
  z[0] = -Infinity;
  z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    let sq = meet(q, v[k]);
    while (sq <= z[k]) {
      k--;
      sq = meet(q, v[k]);
    }
    k++;
    v[k] = q;
    z[k] = sq;
    z[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (z[k + 1] < q) k++;
    const p = v[k];
    d[q] = s2 * (q - p) * (q - p) + f[p];
  }
}

/**
 * Exact squared Euclidean distance (mm²) from every pixel of a w x h image to the nearest
 * pixel where ``mask`` is set; INF-ish where the mask is empty.
 */
export function distance2(mask, w, h, sw, sh) {
  const out = new Float64Array(w * h);
  for (let i = 0; i < w * h; i++) out[i] = mask[i] ? 0 : INF;
  const n = Math.max(w, h);
  const f = new Float64Array(n);
  const d = new Float64Array(n);
  const v = new Int32Array(n);
  const z = new Float64Array(n + 1);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) f[x] = out[x + y * w];
    dt1d(f, w, sw, d, v, z);
    for (let x = 0; x < w; x++) out[x + y * w] = d[x];
  }
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) f[y] = out[x + y * w];
    dt1d(f, h, sh, d, v, z);
    for (let y = 0; y < h; y++) out[x + y * w] = d[y];
  }
  return out;
}

/** Signed distance (mm): negative inside the mask, positive outside, voxel centre to centre. */
export function signedDistance(mask, w, h, sw, sh) {
  const outside = distance2(mask, w, h, sw, sh);
  const inverse = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) inverse[i] = mask[i] ? 0 : 1;
  const inside = distance2(inverse, w, h, sw, sh);
  const out = new Float64Array(w * h);
  for (let i = 0; i < w * h; i++) out[i] = Math.sqrt(outside[i]) - Math.sqrt(inside[i]);
  return out;
}

/** The in-plane axes (u fastest) of slices along ``axis``. */
function planeAxes(axis) {
  return { 0: [1, 2], 1: [0, 2], 2: [0, 1] }[axis];
}

/**
 * Interpolate ``value`` between its drawn slices along ``axis``.
 * @param {object} args
 * @param {Uint8Array} args.labels written in place
 * @param {number[]} args.dims
 * @param {number[]} args.spacing mm per voxel [sx, sy, sz]
 * @param {number} args.value the label
 * @param {number} args.axis 0, 1 or 2: the voxel axis the slices are stacked along
 * @param {(i: number, value: number) => boolean} [args.canWrite] locked labels stay
 * @returns {{changed: number, drawn: number[], filled: number[]}} voxels written, the drawn slices,
 *   the slices filled
 */
export function interpolateSlices({ labels, dims, spacing, value, axis, canWrite = null }) {
  const [u, v] = planeAxes(axis);
  const nu = dims[u];
  const nv = dims[v];
  const ns = dims[axis];
  const stride = [1, dims[0], dims[0] * dims[1]];
  const index = (a, b, s) => a * stride[u] + b * stride[v] + s * stride[axis];
  // Which slices hold the label, and the in-plane box of the label over all of them.
  const drawn = [];
  let a0 = nu;
  let a1 = -1;
  let b0 = nv;
  let b1 = -1;
  for (let s = 0; s < ns; s++) {
    let any = false;
    for (let b = 0; b < nv; b++) {
      for (let a = 0; a < nu; a++) {
        if (labels[index(a, b, s)] === value) {
          any = true;
          if (a < a0) a0 = a;
          if (a > a1) a1 = a;
          if (b < b0) b0 = b;
          if (b > b1) b1 = b;
        }
      }
    }
    if (any) drawn.push(s);
  }
  const result = { changed: 0, drawn, filled: [] };
  if (drawn.length < 2) return result;
  // Work in the box, with a margin so that a shape touching it still has an outside.
  a0 = Math.max(0, a0 - 2);
  b0 = Math.max(0, b0 - 2);
  a1 = Math.min(nu - 1, a1 + 2);
  b1 = Math.min(nv - 1, b1 + 2);
  const w = a1 - a0 + 1;
  const h = b1 - b0 + 1;
  const sliceDistance = (s) => {
    const mask = new Uint8Array(w * h);
    for (let b = 0; b < h; b++) {
      for (let a = 0; a < w; a++) mask[a + b * w] = labels[index(a + a0, b + b0, s)] === value ? 1 : 0;
    }
    return signedDistance(mask, w, h, spacing[u], spacing[v]);
  };
  let lower = sliceDistance(drawn[0]);
  for (let n = 1; n < drawn.length; n++) {
    const s0 = drawn[n - 1];
    const s1 = drawn[n];
    const upper = sliceDistance(s1);
    for (let s = s0 + 1; s < s1; s++) {
      const t = (s - s0) / (s1 - s0);
      let wrote = 0;
      for (let b = 0; b < h; b++) {
        for (let a = 0; a < w; a++) {
          const k = a + b * w;
          if ((1 - t) * lower[k] + t * upper[k] >= 0) continue;
          const i = index(a + a0, b + b0, s);
          if (labels[i] === value) continue;
          if (canWrite && !canWrite(i, value)) continue;
          labels[i] = value;
          wrote++;
        }
      }
      if (wrote) result.filled.push(s);
      result.changed += wrote;
    }
    lower = upper;
  }
  return result;
}
