import assert from "node:assert/strict";
import { test } from "node:test";
import { gunzipSync, crc32 as zlibCrc32 } from "node:zlib";

import { crc32, gzipRle } from "../src/js/gzip-rle.js";

function labelVolume(n, seed) {
  // runs of assorted lengths (1..600) and values, like a label map, plus a noisy header
  const out = new Uint8Array(n);
  let state = seed;
  const rand = () => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32);
  let i = 0;
  while (i < Math.min(352, n)) out[i++] = Math.floor(rand() * 256);
  while (i < n) {
    const value = rand() < 0.7 ? 0 : Math.floor(rand() * 5);
    const length = 1 + Math.floor(rand() ** 3 * 600);
    out.fill(value, i, Math.min(n, i + length));
    i += length;
  }
  return out;
}

test("node's zlib reads it back byte for byte", () => {
  const cases = [new Uint8Array(0), Uint8Array.from([7]), new Uint8Array(258 + 1), new Uint8Array(259 + 1).fill(3), labelVolume(200000, 1)];
  for (let run = 1; run < 530; run += 1) cases.push(new Uint8Array(run).fill(9));
  for (const bytes of cases) {
    assert.deepEqual(new Uint8Array(gunzipSync(gzipRle(bytes))), bytes, `length ${bytes.length}`);
  }
});

test("random bytes (no runs) survive too", () => {
  const bytes = labelVolume(5000, 2).map((v, i) => (v * 31 + i * 17) & 0xff);
  assert.deepEqual(new Uint8Array(gunzipSync(gzipRle(bytes))), bytes);
});

test("label volumes compress well", () => {
  const bytes = new Uint8Array(2_000_000);
  bytes.fill(2, 500_000, 800_000);
  assert.ok(gzipRle(bytes).length < 20_000); // about 13 bits per 258 repeated bytes
});

test("crc32 matches zlib", () => {
  const bytes = labelVolume(10000, 3);
  assert.equal(crc32(bytes), zlibCrc32(bytes));
});
