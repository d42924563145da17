// Undo and redo for the drawing: a list of run-length snapshots with a cursor.
//
// NiiVue keeps only an undo ring; we keep both directions. Every edit (a pen stroke, a fill,
// loading a revision) records the bitmap after the edit; undo moves the cursor back and
// restores that snapshot, redo moves it forward. An edit after an undo drops the redo branch.
import { rleDecode, rleEncode } from "./rle.js";

export class History {
  /** @param {{limit?: number}} [options] how many snapshots to keep (the oldest are dropped) */
  constructor({ limit = 50 } = {}) {
    this.limit = limit;
    this.snapshots = [];
    this.cursor = -1;
    this.edits = 0; // edits recorded since the page opened (the benchmark reads it)
  }

  /** Start over from ``bitmap`` (nothing to undo). */
  reset(bitmap) {
    this.snapshots = [rleEncode(bitmap)];
    this.cursor = 0;
  }

  /** Record the state after an edit. */
  record(bitmap) {
    this.edits += 1;
    this.snapshots.length = this.cursor + 1;
    this.snapshots.push(rleEncode(bitmap));
    if (this.snapshots.length > this.limit) this.snapshots.shift();
    this.cursor = this.snapshots.length - 1;
  }

  /** The state at the cursor (the last recorded edit), decoded into ``target`` or a new array. */
  current(target) {
    return rleDecode(this.snapshots[this.cursor], target);
  }

  get canUndo() {
    return this.cursor > 0;
  }

  get canRedo() {
    return this.cursor < this.snapshots.length - 1;
  }

  /** Write the previous state into ``bitmap``; false when there is nothing to undo. */
  undo(bitmap) {
    if (!this.canUndo) return false;
    this.cursor -= 1;
    rleDecode(this.snapshots[this.cursor], bitmap);
    return true;
  }

  /** Write the next state into ``bitmap``; false when there is nothing to redo. */
  redo(bitmap) {
    if (!this.canRedo) return false;
    this.cursor += 1;
    rleDecode(this.snapshots[this.cursor], bitmap);
    return true;
  }
}
