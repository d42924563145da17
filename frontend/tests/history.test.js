import assert from "node:assert/strict";
import { test } from "node:test";

import { History } from "../src/js/history.js";
import { rleDecode, rleEncode } from "../src/js/rle.js";

test("run-length coding round-trips, including empty and single-run bitmaps", () => {
  for (const bitmap of [new Uint8Array(0), new Uint8Array(7), Uint8Array.from([1, 1, 0, 0, 0, 4, 4, 1])]) {
    const encoded = rleEncode(bitmap);
    assert.deepEqual(rleDecode(encoded), bitmap);
  }
  assert.equal(rleEncode(new Uint8Array(1000)).runs.length, 1);
  assert.throws(() => rleDecode(rleEncode(new Uint8Array(4)), new Uint8Array(5)), /holds 5 voxels/);
});

test("undo and redo walk the snapshots; a new edit drops the redo branch", () => {
  const bitmap = new Uint8Array(4);
  const history = new History();
  history.reset(bitmap);
  assert.equal(history.canUndo, false);
  bitmap[0] = 1;
  history.record(bitmap);
  bitmap[1] = 2;
  history.record(bitmap);
  assert.ok(history.undo(bitmap));
  assert.deepEqual([...bitmap], [1, 0, 0, 0]);
  assert.ok(history.undo(bitmap));
  assert.deepEqual([...bitmap], [0, 0, 0, 0]);
  assert.equal(history.undo(bitmap), false, "nothing left to undo");
  assert.ok(history.redo(bitmap));
  assert.deepEqual([...bitmap], [1, 0, 0, 0]);
  bitmap[3] = 4;
  history.record(bitmap);
  assert.equal(history.canRedo, false);
  assert.ok(history.undo(bitmap));
  assert.deepEqual([...bitmap], [1, 0, 0, 0]);
});

test("the oldest snapshots are dropped beyond the limit", () => {
  const bitmap = new Uint8Array(1);
  const history = new History({ limit: 3 });
  history.reset(bitmap);
  for (let v = 1; v <= 5; v++) {
    bitmap[0] = v;
    history.record(bitmap);
  }
  assert.ok(history.undo(bitmap) && history.undo(bitmap));
  assert.equal(bitmap[0], 3);
  assert.equal(history.undo(bitmap), false);
});
