// The editing shortcuts are one list, without clashes, and the automatic fill range (threshold.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ALL_EDITING, editingBindings } from "../src/js/editing-shortcuts.js";
import { floodFill } from "../src/js/fill.js";
import { autoRange, histogram, noiseSigma } from "../src/js/threshold.js";

const fakeTools = {};
const fakeOperations = {};

test("every tool and action has a key, no key is bound twice, the review page gets only its tools", () => {
  const all = editingBindings(fakeTools, { offered: ALL_EDITING, operations: fakeOperations });
  const keys = all.flatMap((b) => b.keys);
  assert.equal(new Set(keys).size, keys.length, "a key bound twice");
  for (const expected of ["b", "Shift+b", "e", "t", "Shift+t", "i", "Enter", "Escape", "g", "x", "Shift+x", "k", ">", "<", "Shift+s", "Shift+l", "h", "0", "Shift+r", "Shift+w", "[", "]"]) {
    assert.ok(keys.includes(expected), `no binding for ${expected}`);
  }
  // the viewer's own keys (annotate.js) are not taken
  for (const theirs of ["l", "o", "d", "v", "r", "w", "+", "=", "-", "?", "1", "9", "a", "c", "s", "m", "Shift+c", "ArrowUp", "Ctrl+s", "Ctrl+Enter"]) {
    assert.ok(!keys.includes(theirs), `${theirs} is the viewer's`);
  }
  const review = editingBindings(fakeTools, { offered: ["navigate", "brush", "pen", "eraser"] }).flatMap((b) => b.keys);
  assert.deepEqual(review.sort(), ["Ctrl+Shift+z", "Ctrl+y", "Ctrl+z", "Escape", "[", "]", "b", "e", "p"].sort());
  const noServer = editingBindings(fakeTools, { offered: ALL_EDITING }).flatMap((b) => b.keys);
  assert.ok(!noServer.includes("g") && noServer.includes("i"), "server actions need the operations");
});

/** A smooth two-tissue phantom with Gaussian noise: a bright ball (600) in a darker slab (400). */
function phantom(sigma = 20, seed = 1) {
  const dims = [40, 40, 30];
  const image = new Float32Array(dims[0] * dims[1] * dims[2]);
  let state = seed;
  const uniform = () => {
    state = (state * 1664525 + 1013904223) % 4294967296;
    return (state + 0.5) / 4294967296;
  };
  const gauss = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  for (let z = 0; z < dims[2]; z++) {
    for (let y = 0; y < dims[1]; y++) {
      for (let x = 0; x < dims[0]; x++) {
        const inBall = (x - 20) ** 2 + (y - 20) ** 2 + (z - 15) ** 2 <= 64;
        const background = x < 4 || x > 35;
        const v = background ? 20 : inBall ? 600 : 400 + 2 * x; // a gentle bias in the slab
        image[x + y * dims[0] + z * dims[0] * dims[1]] = v + sigma * gauss();
      }
    }
  }
  return { image, dims };
}

test("the noise is estimated within 20 %", () => {
  const { image, dims } = phantom(20);
  const sigma = noiseSigma(image, dims);
  assert.ok(sigma > 16 && sigma < 24, `sigma ${sigma}`);
});

test("the automatic range fills the ball from its centre and the slab from a slab voxel, not 2 voxels", () => {
  const { image, dims } = phantom(20);
  const labels = new Uint8Array(image.length);
  const ball = autoRange({ image, dims, seed: [20, 20, 15], axis: null });
  const filled = floodFill({ labels, image, dims, seed: [20, 20, 15], value: 1, lo: ball.lo, hi: ball.hi });
  // the ball holds 2109 voxels (radius 8); the fill takes most of it and nothing of the slab
  assert.ok(filled.filled > 1700 && filled.filled <= 2109, `ball: ${filled.filled}`);
  const slab = autoRange({ image, dims, seed: [10, 10, 5], axis: 2 });
  const slice = floodFill({ labels: new Uint8Array(image.length), image, dims, seed: [10, 10, 5], value: 1, lo: slab.lo, hi: slab.hi, axis: 2 });
  assert.ok(slice.filled > 150, `slab slice: ${slice.filled}`);
  assert.ok(slab.hi < 550, "the range stops below the ball");
});

test("the histogram counts every sampled voxel", () => {
  const { image } = phantom(20);
  const h = histogram(image, { bins: 32 });
  assert.equal(h.counts.reduce((a, b) => a + b, 0), image.length);
});
