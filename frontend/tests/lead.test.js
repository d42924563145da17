// Unit tests of the lead pages' pure modules: reading NIfTI channels, the flagged-scan
// walk, polling, formatting, and the heat map's colour scale (node --test frontend/tests/).
import assert from "node:assert/strict";
import { test } from "node:test";

import { diceDomain, textColourOn, viridis } from "../src/js/charts.js";
import { flaggedNeighbours } from "../src/js/flagged.js";
import { gunzipIfNeeded, readChannels, readHeader, summarise } from "../src/js/nifti.js";
import { pollJob } from "../src/js/poll.js";
import { fmt, humanSize, pct } from "../src/js/tables.js";

/** A little-endian NIfTI-1 float32 volume of ``dims`` (x fastest), affine 2 mm, shifted. */
function nifti(dims, values) {
  const out = new Uint8Array(352 + 4 * values.length);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, 348, true);
  dv.setInt16(40, dims.length, true);
  dims.forEach((d, i) => dv.setInt16(42 + 2 * i, d, true));
  for (let i = dims.length; i < 7; i++) dv.setInt16(42 + 2 * i, 1, true);
  dv.setInt16(68, 1002, true); // intent: label
  dv.setInt16(70, 16, true);
  dv.setInt16(72, 32, true);
  dv.setFloat32(108, 352, true);
  dv.setFloat32(112, 1, true);
  dv.setInt16(254, 1, true); // sform_code
  [2, 0, 0, -10, 0, 2, 0, 5, 0, 0, 2, 7].forEach((v, i) => dv.setFloat32(280 + 4 * i, v, true));
  out.set([0x6e, 0x2b, 0x31, 0x00], 344);
  new Float32Array(out.buffer, 352).set(values);
  return out;
}

// A 2x2x1 posterior over 3 channels (background, 1, 2); each voxel's probabilities sum to 1.
const P = [
  [1.0, 0.5, 0.2, 0.0], // channel 0 of voxels 0..3
  [0.0, 0.5, 0.3, 0.1],
  [0.0, 0.0, 0.5, 0.9],
];

test("a 4-D posterior is read as one channel per label, a 3-D volume as one", () => {
  const raw = nifti([2, 2, 1, 3], P.flat());
  const { header, channels, nvox } = readChannels(raw);
  assert.deepEqual(header.dims.slice(0, 4), [2, 2, 1, 3]);
  assert.equal(nvox, 4);
  assert.equal(channels.length, 3);
  assert.deepEqual(Array.from(channels[2]), Array.from(Float32Array.from(P[2])));
  const u = Float32Array.from([0, 0.5, 0.5, 0.1]); // 1 - max posterior, as the server sends it
  const three = readChannels(nifti([2, 2, 1], Array.from(u)));
  assert.equal(three.channels.length, 1);
  assert.deepEqual(Array.from(three.channels[0]), Array.from(u));
  assert.deepEqual(summarise(three.channels[0], 0.05), { max: 0.5, above: 3 });
});

test("gzip bytes are unpacked, plain bytes are left alone", async () => {
  const raw = nifti([2, 2, 1, 3], P.flat());
  const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("gzip"));
  const gz = new Uint8Array(await new Response(stream).arrayBuffer());
  assert.deepEqual(await gunzipIfNeeded(gz), raw);
  assert.equal(await gunzipIfNeeded(raw), raw);
  assert.throws(() => readHeader(new Uint8Array(400)), /NIfTI-1/);
});

test("flagged scans are walked most ambiguous first; an adjudicated scan keeps its place", () => {
  const flagged = [
    { id: 7, ambiguity: 0.4 },
    { id: 3, ambiguity: 0.2 },
    { id: 9, ambiguity: 0.2 },
  ];
  assert.deepEqual(flaggedNeighbours(flagged, 3, 0.2), { here: 1, previous: flagged[0], next: flagged[2] });
  assert.deepEqual(flaggedNeighbours(flagged, 7, 0.4), { here: 0, previous: undefined, next: flagged[1] });
  // Scan 5 (ambiguity 0.3) was just accepted: it sits between 7 and 3.
  assert.deepEqual(flaggedNeighbours(flagged, 5, 0.3), { here: -1, previous: flagged[0], next: flagged[1] });
  // Same ambiguity as 3 and 9, id between them.
  assert.deepEqual(flaggedNeighbours(flagged, 4, 0.2), { here: -1, previous: flagged[1], next: flagged[2] });
  assert.deepEqual(flaggedNeighbours([], 4, 0.2), { here: -1, previous: undefined, next: undefined });
});

test("polling stops at done or failed and reports every answer", async () => {
  const answers = [{ status: "queued" }, { status: "running", progress: 0.5 }, { status: "done", progress: 1 }];
  const seen = [];
  const job = await pollJob(async () => answers.shift(), { onUpdate: (j) => seen.push(j.status), intervalMs: 1 });
  assert.equal(job.status, "done");
  assert.deepEqual(seen, ["queued", "running", "done"]);
  const failed = await pollJob(async () => ({ status: "failed", error: "boom" }), { intervalMs: 1 });
  assert.equal(failed.error, "boom");
  await assert.rejects(pollJob(async () => ({ status: "running" }), { intervalMs: 1, timeoutMs: 5 }), /Still running/);
});

test("numbers are printed plainly, missing ones as a dash", () => {
  assert.equal(fmt(0.98765), "0.988");
  assert.equal(fmt(-0.0001), "0.000");
  assert.equal(fmt(-0.25, 2), "-0.25");
  assert.equal(fmt(null), "–");
  assert.equal(fmt(Number.POSITIVE_INFINITY), "–");
  assert.equal(pct(0.0834), "8.3 %");
  assert.equal(humanSize(95232), "93.0 KiB");
  assert.equal(humanSize(undefined), "–");
});

test("the heat map's colour scale is viridis, with readable text on it", () => {
  assert.deepEqual(viridis(0), [68, 1, 84]);
  assert.deepEqual(viridis(1), [253, 231, 37]);
  assert.deepEqual(viridis(2), viridis(1));
  assert.equal(textColourOn(viridis(0)), "#ffffff");
  assert.equal(textColourOn(viridis(1)), "#000000");
  assert.deepEqual(diceDomain([0.58, 0.98]), [0.5, 1]);
  assert.deepEqual(diceDomain([0.97, 0.99]), [0.9, 1]);
  assert.deepEqual(diceDomain([null]), [0, 1]);
});
