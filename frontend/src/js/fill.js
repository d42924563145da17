// Flood fill limited to an intensity range, in one slice or in 3D.
//
// Pure: works on typed arrays in the drawing's voxel order (x fastest, then y, then z), the
// order of the stored scan. NiiVue's own drawFloodFill recolours with the seed's existing
// label when the seed is labelled; here the fill always writes the chosen value, as ITK-SNAP
// and 3D Slicer do.

/** Slice orientations: the voxel axis held constant when filling in one slice. */
export const PLANE_AXIS = { axial: 2, coronal: 1, sagittal: 0 };

/**
 * Fill the connected voxels around ``seed`` whose intensity lies in [lo, hi].
 *
 * @param {object} args
 * @param {Uint8Array} args.labels label bitmap, length nx*ny*nz; written in place
 * @param {ArrayLike<number>} args.image raw image voxels, same order and length
 * @param {number[]} args.dims [nx, ny, nz]
 * @param {number[]} args.seed [x, y, z] voxel indices
 * @param {number} args.value label value to write (0 erases)
 * @param {number} args.lo lowest intensity filled (in scaled units, see slope/inter)
 * @param {number} args.hi highest intensity filled
 * @param {number|null} [args.axis] voxel axis held constant (2D fill in that slice), or null for 3D
 * @param {number} [args.slope] raw-to-scaled intensity slope (NIfTI scl_slope; 0 means 1)
 * @param {number} [args.inter] raw-to-scaled intercept (NIfTI scl_inter)
 * @param {(i: number) => boolean} [args.canWrite] voxels it may not write (a locked label) are
 *   walls: the region neither includes nor crosses them
 * @param {boolean} [args.dryRun] measure the region only, write nothing
 * @param {number} [args.limit] stop once the region holds more voxels than this (``leaked``)
 * @returns {{filled: number, changed: number, leaked: boolean}} voxels in the region, voxels whose
 *   label changed (or would), and whether it stopped at ``limit``
 *
 * Connectivity is 6 in 3D and 4 in a slice (faces only). A seed outside the range fills nothing.
 */
export function floodFill({ labels, image, dims, seed, value, lo, hi, axis = null, slope = 1, inter = 0, canWrite = null, dryRun = false, limit = Infinity }) {
  const [nx, ny, nz] = dims;
  const n = nx * ny * nz;
  if (labels.length !== n || image.length < n) {
    throw new Error(`floodFill: labels (${labels.length}) and image (${image.length}) must hold ${n} voxels`);
  }
  const [sx, sy, sz] = seed.map((c) => Math.round(c));
  if (sx < 0 || sy < 0 || sz < 0 || sx >= nx || sy >= ny || sz >= nz) return { filled: 0, changed: 0, leaked: false };
  const scale = slope === 0 || !Number.isFinite(slope) ? 1 : slope;
  const offset = Number.isFinite(inter) ? inter : 0;
  const inRange = (i) => {
    const v = image[i] * scale + offset;
    return v >= lo && v <= hi && (!canWrite || canWrite(i));
  };
  const seedIndex = sx + sy * nx + sz * nx * ny;
  if (!inRange(seedIndex)) return { filled: 0, changed: 0, leaked: false };

  const nxy = nx * ny;
  const visited = new Uint8Array(n);
  const queue = new Int32Array(n);
  let head = 0;
  let tail = 0;
  queue[tail++] = seedIndex;
  visited[seedIndex] = 1;
  let filled = 0;
  let changed = 0;
  const visit = (j) => {
    if (!visited[j]) {
      visited[j] = 1;
      if (inRange(j)) queue[tail++] = j;
    }
  };
  while (head < tail) {
    const i = queue[head++];
    filled++;
    if (filled > limit) return { filled, changed, leaked: true };
    if (labels[i] !== value) {
      if (!dryRun) labels[i] = value;
      changed++;
    }
    const x = i % nx;
    const y = ((i - x) / nx) % ny;
    const z = Math.floor(i / nxy);
    if (axis !== 0) {
      if (x > 0) visit(i - 1);
      if (x < nx - 1) visit(i + 1);
    }
    if (axis !== 1) {
      if (y > 0) visit(i - nx);
      if (y < ny - 1) visit(i + nx);
    }
    if (axis !== 2) {
      if (z > 0) visit(i - nxy);
      if (z < nz - 1) visit(i + nxy);
    }
  }
  return { filled, changed, leaked: false };
}
