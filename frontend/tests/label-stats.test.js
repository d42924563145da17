// Label volumes and islands (label-stats.js), and the MRI window presets (presets.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatMl, islandAt, labelCounts, voxelMl } from "../src/js/label-stats.js";
import { headFloor, percentilePresets, regionWindow } from "../src/js/presets.js";

test("label counts and millilitres", () => {
  const labels = Uint8Array.from([0, 1, 1, 2, 2, 2, 255]);
  const counts = labelCounts(labels);
  assert.equal(counts[1], 2);
  assert.equal(counts[2], 3);
  assert.equal(voxelMl([1, 1, 1]), 0.001);
  assert.equal(voxelMl([2, 2, 2.5]), 0.01);
  assert.equal(formatMl(12.345), "12.3 mL");
  assert.equal(formatMl(0.0456), "0.046 mL");
  assert.equal(formatMl(0), "0 mL");
});

test("the island under a voxel is 26-connected, as the server's islands", () => {
  const dims = [4, 4, 2];
  const labels = new Uint8Array(32);
  const at = (x, y, z) => x + y * 4 + z * 16;
  for (const [x, y, z] of [[0, 0, 0], [1, 0, 0], [1, 0, 1], [3, 3, 0], [2, 1, 0]]) labels[at(x, y, z)] = 3;
  labels[at(3, 3, 1)] = 5; // another label touching (3,3,0): not in its island
  // (2,1,0) touches (1,0,0) by an edge: the same island; (3,3,0) is alone
  assert.deepEqual({ ...islandAt(labels, dims, [0, 0, 0]), members: null }, { value: 3, voxels: 4, complete: true, members: null });
  assert.equal(islandAt(labels, dims, [3, 3, 0]).voxels, 1);
  assert.equal(islandAt(labels, dims, [2, 2, 0]).voxels, 0);
  assert.deepEqual(Array.from(islandAt(labels, dims, [1, 0, 1], { keepMembers: true }).members).sort((a, b) => a - b), [0, 1, 6, 17]);
});

test("presets from percentiles: brain and tight ignore the dark background", () => {
  // 60 % background around 10, 40 % head from 100 to 499
  const image = new Float32Array(1000);
  for (let i = 0; i < 600; i++) image[i] = 10 + (i % 5);
  for (let i = 0; i < 400; i++) image[600 + i] = 100 + i;
  const sorted = Float64Array.from(image).sort();
  const t = headFloor(sorted);
  assert.ok(t > 14 && t < 100, `head threshold ${t}`);
  const p = percentilePresets(image);
  assert.deepEqual(p.full, [10, 499]);
  assert.ok(Math.abs(p.brain[0] - 102) < 2 && Math.abs(p.brain[1] - 497) < 2, `brain ${p.brain}`);
  assert.ok(Math.abs(p.tight[0] - 180) < 2 && Math.abs(p.tight[1] - 495) < 2, `tight ${p.tight}`);
  // scaled units
  const scaled = percentilePresets(Float32Array.from(image), { slope: 2, inter: 1 });
  assert.deepEqual(scaled.full, [21, 999]);
});

test("window from a region: 1-99 % of the box's voxels", () => {
  const dims = [10, 10, 1];
  const image = Float32Array.from({ length: 100 }, (_, i) => i);
  const range = regionWindow(image, dims, [2, 2, 0], [3, 4, 0]); // x 2-3, y 2-4: 22..43
  assert.ok(range[0] >= 22 && range[0] < 23);
  assert.ok(range[1] > 42 && range[1] <= 43);
  assert.equal(regionWindow(new Float32Array(100), dims, [0, 0, 0], [5, 5, 0]), null);
});
