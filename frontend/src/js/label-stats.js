// Measurements of the label volume: voxels and millilitres of each label, and the island
// (26-connected component: voxels touching by a face, an edge or a corner, as the server's
// islands and 3D Slicer's Islands effect) that holds a voxel.
//
// Pure: the drawing's voxel order (x fastest).

/** Voxels of each label value (index = value). */
export function labelCounts(labels) {
  const counts = new Float64Array(256);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  return counts;
}

/** Volume of one voxel in mL from the spacing in mm. */
export function voxelMl(spacing) {
  return (spacing[0] * spacing[1] * spacing[2]) / 1000;
}

/**
 * The island of ``labels[seed]`` that holds ``seed``: 26-connected voxels of the same value.
 * @param {Uint8Array} labels
 * @param {number[]} dims
 * @param {number[]} seed voxel
 * @param {{limit?: number}} [options] stop counting past ``limit`` voxels
 * @returns {{value: number, voxels: number, complete: boolean, members: Int32Array|null}}
 *   ``members`` (the voxel indices) when ``keepMembers`` is set
 */
export function islandAt(labels, dims, seed, { limit = Infinity, keepMembers = false } = {}) {
  const [nx, ny, nz] = dims;
  const nxy = nx * ny;
  const [sx, sy, sz] = seed.map((c) => Math.round(c));
  if (sx < 0 || sy < 0 || sz < 0 || sx >= nx || sy >= ny || sz >= nz) return { value: 0, voxels: 0, complete: true, members: null };
  const start = sx + sy * nx + sz * nxy;
  const value = labels[start];
  if (!value) return { value: 0, voxels: 0, complete: true, members: null };
  const visited = new Uint8Array(labels.length);
  let queue = new Int32Array(1024);
  let head = 0;
  let tail = 0;
  const push = (j) => {
    if (visited[j] || labels[j] !== value) return;
    visited[j] = 1;
    if (tail === queue.length) {
      const grown = new Int32Array(queue.length * 2);
      grown.set(queue);
      queue = grown;
    }
    queue[tail++] = j;
  };
  push(start);
  while (head < tail) {
    if (tail > limit) return { value, voxels: tail, complete: false, members: null };
    const i = queue[head++];
    const x = i % nx;
    const y = ((i - x) / nx) % ny;
    const z = (i - x - y * nx) / nxy;
    for (let dz = -1; dz <= 1; dz++) {
      const zz = z + dz;
      if (zz < 0 || zz >= nz) continue;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= ny) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= nx || (dx === 0 && dy === 0 && dz === 0)) continue;
          push(xx + yy * nx + zz * nxy);
        }
      }
    }
  }
  return { value, voxels: tail, complete: true, members: keepMembers ? queue.slice(0, tail) : null };
}

/** "12.3 mL" / "0.045 mL" / "0 mL": three significant digits, at least one decimal. */
export function formatMl(ml) {
  if (!ml) return "0 mL";
  if (ml >= 100) return `${ml.toFixed(0)} mL`;
  if (ml >= 10) return `${ml.toFixed(1)} mL`;
  if (ml >= 1) return `${ml.toFixed(2)} mL`;
  return `${ml.toPrecision(2)} mL`;
}
