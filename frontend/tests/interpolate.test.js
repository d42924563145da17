// Fill between slices: shape-based interpolation against hand-checkable shapes (interpolate.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { distance2, interpolateSlices, signedDistance } from "../src/js/interpolate.js";

const idx = (dims, x, y, z) => x + y * dims[0] + z * dims[0] * dims[1];

function square(labels, dims, z, x0, x1, y0, y1, value = 1) {
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) labels[idx(dims, x, y, z)] = value;
}

function sliceCount(labels, dims, z, value = 1) {
  let n = 0;
  for (let y = 0; y < dims[1]; y++) for (let x = 0; x < dims[0]; x++) n += labels[idx(dims, x, y, z)] === value ? 1 : 0;
  return n;
}

test("the exact distance transform: a point, anisotropic spacing", () => {
  const mask = new Uint8Array(5 * 3);
  mask[2 + 1 * 5] = 1;
  const d = distance2(mask, 5, 3, 1, 2);
  assert.equal(d[2 + 1 * 5], 0);
  assert.equal(d[0 + 1 * 5], 4); // two voxels of 1 mm
  assert.equal(d[2 + 0 * 5], 4); // one voxel of 2 mm
  assert.equal(d[0 + 0 * 5], 8);
  const s = signedDistance(mask, 5, 3, 1, 1);
  assert.ok(s[2 + 5] < 0 && s[0] > 0);
});

test("a square drawn on slices 0 and 4 fills slices 1-3 with the same square", () => {
  const dims = [12, 12, 5];
  const labels = new Uint8Array(12 * 12 * 5);
  square(labels, dims, 0, 3, 7, 3, 7);
  square(labels, dims, 4, 3, 7, 3, 7);
  const result = interpolateSlices({ labels, dims, spacing: [1, 1, 2], value: 1, axis: 2 });
  assert.deepEqual(result.drawn, [0, 4]);
  assert.deepEqual(result.filled, [1, 2, 3]);
  for (let z = 1; z <= 3; z++) assert.equal(sliceCount(labels, dims, z), 25);
  assert.equal(result.changed, 75);
});

test("a square that grows: the slices between grow step by step (hand-checked sizes)", () => {
  const dims = [16, 16, 5];
  const labels = new Uint8Array(16 * 16 * 5);
  square(labels, dims, 0, 6, 8, 6, 8); // 3 x 3
  square(labels, dims, 4, 4, 10, 4, 10); // 7 x 7
  interpolateSlices({ labels, dims, spacing: [1, 1, 1], value: 1, axis: 2 });
  // the half-way slice (z = 2) is the 5 x 5 square: the signed distances average to its edge
  assert.equal(sliceCount(labels, dims, 2), 25);
  for (let y = 5; y <= 9; y++) for (let x = 5; x <= 9; x++) assert.equal(labels[idx(dims, x, y, 2)], 1);
  assert.ok(sliceCount(labels, dims, 1) >= 9 && sliceCount(labels, dims, 1) <= 25);
  assert.ok(sliceCount(labels, dims, 3) >= 25 && sliceCount(labels, dims, 3) <= 49);
});

test("along another axis, with a drawn slice in the middle and a locked label kept", () => {
  const dims = [7, 10, 8];
  const labels = new Uint8Array(7 * 10 * 8);
  // slices along y (axis 1): y = 1, 5, 9, a 3 x 3 square in x, z
  for (const y of [1, 5, 9]) for (let z = 2; z <= 4; z++) for (let x = 2; x <= 4; x++) labels[idx(dims, x, y, z)] = 2;
  labels[idx(dims, 3, 3, 3)] = 4; // locked
  const result = interpolateSlices({ labels, dims, spacing: [1, 1, 1], value: 2, axis: 1, canWrite: (i) => labels[i] !== 4 });
  assert.deepEqual(result.drawn, [1, 5, 9]);
  assert.deepEqual(result.filled, [2, 3, 4, 6, 7, 8]);
  assert.equal(labels[idx(dims, 3, 3, 3)], 4, "the locked voxel stays");
  assert.equal(labels[idx(dims, 3, 0, 3)], 0, "nothing beyond the first drawn slice");
  assert.equal(result.changed, 6 * 9 - 1);
});

test("a label on one slice only: nothing to interpolate", () => {
  const dims = [5, 5, 3];
  const labels = new Uint8Array(75);
  labels[idx(dims, 2, 2, 1)] = 1;
  assert.deepEqual(interpolateSlices({ labels, dims, spacing: [1, 1, 1], value: 1, axis: 2 }), { changed: 0, drawn: [1], filled: [] });
});
