// Round and sphere brushes in millimetres on anisotropic grids (brush.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { brushOffsets, lineVoxels, stamp, stampLine, stepSize } from "../src/js/brush.js";

const triples = (offsets) => Array.from({ length: offsets.length / 3 }, (_, i) => [offsets[3 * i], offsets[3 * i + 1], offsets[3 * i + 2]]);

test("a disc stays in its slice and is round in millimetres", () => {
  // 1 x 1 mm in plane: a 5 mm disc holds the voxels within 2.5 mm: 21 (the 5x5 square less its corners)
  const disc = triples(brushOffsets({ diameterMm: 5, spacing: [1, 1, 3], shape: "disc", axis: 2 }));
  assert.equal(disc.length, 21);
  assert.ok(disc.every(([, , dz]) => dz === 0));
  assert.ok(disc.every(([dx, dy]) => dx * dx + dy * dy <= 6.25));
  // the smallest brush is one voxel
  assert.deepEqual(triples(brushOffsets({ diameterMm: 1, spacing: [1, 1, 1], shape: "disc", axis: 2 })), [[0, 0, 0]]);
});

test("anisotropic spacing: a disc in a coronal slice of 1 x 3 mm voxels is an ellipse in voxels", () => {
  const disc = triples(brushOffsets({ diameterMm: 7, spacing: [1, 2, 3], shape: "disc", axis: 1 }));
  assert.ok(disc.every(([, dy]) => dy === 0));
  const xs = disc.map(([dx]) => dx);
  const zs = disc.map(([, , dz]) => dz);
  assert.equal(Math.max(...xs), 3, "3 voxels of 1 mm within 3.5 mm");
  assert.equal(Math.max(...zs), 1, "1 voxel of 3 mm within 3.5 mm");
});

test("a sphere spans slices by the spacing of each axis", () => {
  const sphere = triples(brushOffsets({ diameterMm: 8, spacing: [1, 1, 2], shape: "sphere" }));
  assert.deepEqual(
    [0, 1, 2].map((k) => Math.max(...sphere.map((t) => t[k]))),
    [4, 4, 2],
  );
  for (const [dx, dy, dz] of sphere) assert.ok(dx * dx + dy * dy + (2 * dz) ** 2 <= 16 + 1e-6);
  // volume close to the ball's (4/3 pi r^3 / voxel volume)
  const expected = ((4 / 3) * Math.PI * 64) / 2;
  assert.ok(Math.abs(sphere.length - expected) / expected < 0.15, `${sphere.length} vs ${expected}`);
});

test("stamp writes inside the grid only and asks canWrite voxel by voxel", () => {
  const dims = [5, 5, 1];
  const labels = new Uint8Array(25);
  labels[0] = 7; // "locked"
  const offsets = brushOffsets({ diameterMm: 3, spacing: [1, 1, 1], shape: "disc", axis: 2 });
  const changed = stamp({ labels, dims, centre: [0, 0, 0], offsets, value: 2, canWrite: (i) => labels[i] !== 7 });
  assert.equal(labels[0], 7);
  assert.equal(changed, 3, "(1,0), (0,1), (1,1): the others fall off the grid or are locked");
});

test("a stroke paints every voxel of the line between the mouse positions", () => {
  assert.equal(lineVoxels([0, 0, 0], [4, 2, 0]).length, 5);
  const dims = [6, 3, 1];
  const labels = new Uint8Array(18);
  const offsets = brushOffsets({ diameterMm: 1, spacing: [1, 1, 1], shape: "disc", axis: 2 });
  stampLine({ labels, dims, from: [0, 0, 0], to: [5, 2, 0], offsets, value: 1 });
  assert.equal(labels.reduce((a, b) => a + b, 0), 6);
  assert.equal(labels[0], 1);
  assert.equal(labels[5 + 2 * 6], 1);
});

test("[ and ] step through the sizes", () => {
  assert.equal(stepSize(1, 1), 2);
  assert.equal(stepSize(2, 1), 3);
  assert.equal(stepSize(12, 1), 15);
  assert.equal(stepSize(15, -1), 12);
  assert.equal(stepSize(1, -1), 1);
  assert.equal(stepSize(50, 1), 50);
});
