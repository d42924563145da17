// Unit tests of the pure modules (node --test frontend/tests/; also run by pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import { floodFill, PLANE_AXIS } from "../src/js/fill.js";

// A 4x3x2 volume (x fastest). Intensities of slice z=0 and z=1:
//   z=0: y0: 10 10 50 10     z=1: y0: 10 50 50 50
//        y1: 10 50 50 10          y1: 50 50 50 50
//        y2: 50 50 10 10          y2: 50 50 50 50
const dims = [4, 3, 2];
const image = Float32Array.from([10, 10, 50, 10, 10, 50, 50, 10, 50, 50, 10, 10, 10, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50]);
const at = (x, y, z) => x + y * 4 + z * 12;

test("2D fill stays in the slice and follows 4-connectivity", () => {
  const labels = new Uint8Array(24);
  const result = floodFill({ labels, image, dims, seed: [0, 0, 0], value: 3, lo: 0, hi: 20, axis: PLANE_AXIS.axial });
  // (0,0),(1,0),(0,1) are connected; (3,0),(3,1),(2,2),(3,2) are another region.
  assert.deepEqual(result, { filled: 3, changed: 3, leaked: false });
  assert.deepEqual([at(0, 0, 0), at(1, 0, 0), at(0, 1, 0)].map((i) => labels[i]), [3, 3, 3]);
  assert.equal(labels[at(3, 0, 0)], 0);
  assert.equal(labels.slice(12).reduce((a, b) => a + b, 0), 0, "nothing in the other slice");
});

test("3D fill crosses slices; diagonal neighbours are not connected", () => {
  const labels = new Uint8Array(24);
  const result = floodFill({ labels, image, dims, seed: [2, 0, 0], value: 1, lo: 40, hi: 60, axis: null });
  // every 50: 5 in slice 0 and 11 in slice 1, face-connected (slice 0 to 1 through x=2, y=0)
  assert.equal(result.filled, 16);
  assert.equal(labels[at(0, 0, 1)], 0, "a 10 in slice 1 is outside the range");
});

test("a seed outside the range fills nothing; existing labels are overwritten and counted", () => {
  const labels = new Uint8Array(24).fill(2);
  assert.deepEqual(floodFill({ labels, image, dims, seed: [0, 0, 0], value: 1, lo: 40, hi: 60 }), { filled: 0, changed: 0, leaked: false });
  const result = floodFill({ labels, image, dims, seed: [0, 0, 0], value: 2, lo: 0, hi: 20, axis: 2 });
  assert.deepEqual(result, { filled: 3, changed: 0, leaked: false });
});

test("scaled intensities (scl_slope / scl_inter) are compared in scaled units", () => {
  const labels = new Uint8Array(24);
  const result = floodFill({ labels, image, dims, seed: [0, 0, 0], value: 1, lo: 19, hi: 21, axis: 2, slope: 2, inter: -0 });
  assert.equal(result.filled, 3);
});

test("wrong sizes are refused with a message", () => {
  assert.throws(() => floodFill({ labels: new Uint8Array(3), image, dims, seed: [0, 0, 0], value: 1, lo: 0, hi: 1 }), /must hold 24 voxels/);
});

test("locked voxels are walls; a dry run writes nothing; a limit stops a leak", () => {
  const labels = new Uint8Array(24);
  labels[at(2, 1, 0)] = 9; // locked: the 50s of slice 0 split around it
  const canWrite = (i) => labels[i] !== 9;
  const dry = floodFill({ labels, image, dims, seed: [2, 0, 0], value: 1, lo: 40, hi: 60, axis: 2, canWrite, dryRun: true });
  assert.equal(dry.filled, 1, "(2,0) alone: its only in-range neighbour (2,1) is locked");
  assert.equal(labels.filter((v) => v === 1).length, 0, "a dry run writes nothing");
  const capped = floodFill({ labels, image, dims, seed: [2, 0, 0], value: 1, lo: 40, hi: 60, limit: 5 });
  assert.equal(capped.leaked, true);
  assert.ok(capped.filled > 5);
});
