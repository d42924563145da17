// Round brushes in millimetres: a disc in the slice being drawn, or a sphere, on the voxel grid
// with its own (possibly anisotropic) spacing, as 3D Slicer's paint effect.
//
// Pure: typed arrays in the drawing's voxel order (x fastest). A brush is a list of voxel
// offsets (dx, dy, dz) around its centre, computed once per size, shape, plane and spacing;
// painting a stroke stamps it at every voxel of the line between two mouse positions.
// ``canWrite(index, value)`` decides voxel by voxel (locked labels, threshold painting).

export const SHAPES = { disc: "Round (disc in the slice)", sphere: "Sphere (3D)" };

/**
 * The voxel offsets of a brush: voxels whose centre lies within diameter / 2 of the brush's
 * centre, in millimetres. The centre voxel is always in it.
 * @param {object} args
 * @param {number} args.diameterMm
 * @param {number[]} args.spacing [sx, sy, sz] mm per voxel along x, y, z
 * @param {"disc"|"sphere"} args.shape
 * @param {number|null} [args.axis] disc: the voxel axis held constant (2 axial, 1 coronal, 0 sagittal)
 * @returns {Int32Array} flat (dx, dy, dz) triples
 */
export function brushOffsets({ diameterMm, spacing, shape, axis = 2 }) {
  const r = Math.max(0, diameterMm / 2);
  const r2 = r * r * (1 + 1e-6) + 1e-9; // a voxel centre on the rim is in, whatever the rounding
  const reach = spacing.map((s, a) => (shape === "disc" && a === axis ? 0 : Math.floor((r / s) * (1 + 1e-6))));
  const out = [];
  for (let dz = -reach[2]; dz <= reach[2]; dz++) {
    for (let dy = -reach[1]; dy <= reach[1]; dy++) {
      for (let dx = -reach[0]; dx <= reach[0]; dx++) {
        const d2 = (dx * spacing[0]) ** 2 + (dy * spacing[1]) ** 2 + (dz * spacing[2]) ** 2;
        if (d2 <= r2 || (dx === 0 && dy === 0 && dz === 0)) out.push(dx, dy, dz);
      }
    }
  }
  return Int32Array.from(out);
}

/**
 * Stamp a brush at ``centre``.
 * @param {object} args
 * @param {Uint8Array} args.labels written in place
 * @param {number[]} args.dims
 * @param {number[]} args.centre voxel
 * @param {Int32Array} args.offsets from brushOffsets
 * @param {number} args.value label written (0 erases)
 * @param {(i: number, value: number) => boolean} [args.canWrite]
 * @returns {number} voxels changed
 */
export function stamp({ labels, dims, centre, offsets, value, canWrite = null }) {
  const [nx, ny, nz] = dims;
  const nxy = nx * ny;
  const [cx, cy, cz] = centre.map((c) => Math.round(c));
  let changed = 0;
  for (let o = 0; o < offsets.length; o += 3) {
    const x = cx + offsets[o];
    const y = cy + offsets[o + 1];
    const z = cz + offsets[o + 2];
    if (x < 0 || y < 0 || z < 0 || x >= nx || y >= ny || z >= nz) continue;
    const i = x + y * nx + z * nxy;
    if (labels[i] === value) continue;
    if (canWrite && !canWrite(i, value)) continue;
    labels[i] = value;
    changed++;
  }
  return changed;
}

/** The voxels of the straight line from a to b (both included), one per step of the longest axis. */
export function lineVoxels(a, b) {
  const [ax, ay, az] = a.map((c) => Math.round(c));
  const [bx, by, bz] = b.map((c) => Math.round(c));
  const steps = Math.max(Math.abs(bx - ax), Math.abs(by - ay), Math.abs(bz - az));
  const out = [];
  for (let s = 0; s <= steps; s++) {
    const t = steps ? s / steps : 0;
    out.push([Math.round(ax + (bx - ax) * t), Math.round(ay + (by - ay) * t), Math.round(az + (bz - az) * t)]);
  }
  return out;
}

/** Stamp the brush along the line from a to b; returns the voxels changed. */
export function stampLine({ labels, dims, from, to, offsets, value, canWrite = null }) {
  let changed = 0;
  for (const centre of lineVoxels(from, to)) changed += stamp({ labels, dims, centre, offsets, value, canWrite });
  return changed;
}

/** Brush sizes the [ and ] keys step through, in voxels of the finest spacing (then times it in mm). */
export const SIZE_STEPS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50];

/** The next size up (+1) or down (-1) from ``voxels``. */
export function stepSize(voxels, direction) {
  if (direction > 0) return SIZE_STEPS.find((s) => s > voxels + 1e-9) ?? SIZE_STEPS[SIZE_STEPS.length - 1];
  const smaller = SIZE_STEPS.filter((s) => s < voxels - 1e-9);
  return smaller.length ? smaller[smaller.length - 1] : SIZE_STEPS[0];
}
