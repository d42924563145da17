// Autosave: every edit becomes a new immutable revision on the server, named after its base.
//
// States (shown to the user):
//   saved     the server holds exactly what is on screen
//   unsaved   there are edits; a save is scheduled (debounced) or will be sent on leaving
//   saving    a save is on its way
//   conflict  the server has a newer revision than our base (another tab or device saved):
//             the user chooses to reload theirs or to keep theirs as a new revision on top
//   offline   the server cannot be reached: edits are kept in IndexedDB and sent when it returns
//   error     the server refused the save (the message says why); edits are kept in IndexedDB
//   submitted the assignment is frozen: no more saves
import { ApiError, OfflineError, api } from "./api.js";
import { gzipRle } from "./gzip-rle.js";

export const STATE = Object.freeze({
  SAVED: "saved",
  UNSAVED: "unsaved",
  SAVING: "saving",
  CONFLICT: "conflict",
  OFFLINE: "offline",
  ERROR: "error",
  SUBMITTED: "submitted",
});

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
/** Browsers let a request outlive its page (fetch keepalive) only for small bodies. */
const KEEPALIVE_MAX_BYTES = 60000;

export class Autosave {
  /**
   * @param {object} options
   * @param {number} options.assignmentId
   * @param {string} options.username owner of the edits (offline records are per user)
   * @param {number|null} options.base revision the current labels start from
   * @param {string} [options.source] source of the next saved revision ("manual" or "prelabel")
   * @param {() => Promise<Uint8Array>} options.exportLabels the drawing as NIfTI bytes
   * @param {import("./offline-store.js").OfflineStore|null} options.store
   * @param {number} [options.delayMs] debounce after the last edit
   * @param {(state: string, info: object) => void} [options.onState]
   */
  constructor({ assignmentId, username, base, source = "manual", exportLabels, store, delayMs = 1000, onState }) {
    this.assignmentId = assignmentId;
    this.username = username;
    this.base = base;
    this.source = source;
    this.exportLabels = exportLabels;
    this.store = store;
    this.delayMs = delayMs;
    this.onState = onState || (() => {});
    this.state = STATE.SAVED;
    this.info = {};
    this.version = 0; // edit counter
    this.savedVersion = 0; // the version the server holds
    this.timer = null;
    this.inFlight = null;
    this.retryMs = RETRY_MIN_MS;
    this.lastRevision = null;
    this.timings = []; // ms per successful save round trip (export + gzip + upload + answer)
    this.lastTiming = null; // the phases of the last successful save, in ms
    window.addEventListener("online", () => {
      if (this.state === STATE.OFFLINE || this.state === STATE.ERROR) this.saveSoon(0);
    });
  }

  get dirty() {
    return this.version !== this.savedVersion;
  }

  setState(state, info = {}) {
    this.state = state;
    this.info = info;
    this.onState(state, info);
  }

  /** Call after every edit. */
  markDirty() {
    if (this.state === STATE.SUBMITTED) return;
    this.version += 1;
    if (this.state === STATE.SAVED) this.setState(STATE.UNSAVED);
    if (this.state === STATE.UNSAVED || this.state === STATE.SAVING) this.saveSoon(this.delayMs);
  }

  /** Start from edits that are not on the server yet (kept in the browser): save them soon. */
  adoptUnsaved() {
    this.version += 1;
    this.setState(STATE.UNSAVED);
    this.saveSoon(this.delayMs);
  }

  saveSoon(delayMs) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.save().catch(() => {}), delayMs);
  }

  /** Save now (Ctrl+S, submit, leaving the page); resolves when this save attempt is over. */
  async flush({ leaving = false } = {}) {
    clearTimeout(this.timer);
    if (this.inFlight) await this.inFlight;
    if (this.dirty && (this.state === STATE.UNSAVED || this.state === STATE.OFFLINE || this.state === STATE.ERROR)) {
      this.leaving = leaving;
      try {
        await this.save();
      } finally {
        this.leaving = false;
      }
    }
    return this.state;
  }

  async save() {
    if (this.inFlight) {
      // One save at a time; the edits made meanwhile go in the next one.
      await this.inFlight;
      if (this.dirty && this.state === STATE.UNSAVED) this.saveSoon(0);
      return;
    }
    if (!this.dirty || this.state === STATE.CONFLICT || this.state === STATE.SUBMITTED) return;
    this.inFlight = this.sendCurrent();
    try {
      await this.inFlight;
    } finally {
      this.inFlight = null;
    }
    if (this.dirty && this.state === STATE.UNSAVED) this.saveSoon(this.delayMs);
  }

  async sendCurrent() {
    const version = this.version;
    const base = this.base;
    const started = performance.now();
    this.setState(STATE.SAVING);
    let bytes;
    let exported;
    try {
      const nifti = await this.exportLabels();
      exported = performance.now();
      bytes = gzipRle(nifti); // run-length deflate: ~10x faster than CompressionStream here
    } catch (error) {
      this.setState(STATE.ERROR, { message: `Could not export the labels: ${error.message}` });
      return;
    }
    const kept = this.keep({ bytes, base, version });
    try {
      if (!navigator.onLine) throw new OfflineError();
      // When the page is being left, a small body goes with keepalive so the request outlives it.
      const keepalive = this.leaving && bytes.length <= KEEPALIVE_MAX_BYTES;
      const sent = performance.now();
      const revision = await api.saveRevision(this.assignmentId, bytes, base, this.source, { keepalive });
      const done = performance.now();
      this.timings.push(done - started);
      this.lastTiming = { export: exported - started, gzip: sent - exported, request: done - sent, total: done - started, bytes: bytes.length };
      this.base = revision.id;
      this.lastRevision = revision;
      this.source = "manual";
      this.savedVersion = version;
      this.retryMs = RETRY_MIN_MS;
      await kept;
      if (this.store) await this.store.deleteIfVersion(this.assignmentId, version).catch(() => {});
      this.setState(this.dirty ? STATE.UNSAVED : STATE.SAVED, { revision });
    } catch (error) {
      await kept;
      this.handleFailure(error);
    }
  }

  /** Write the edits to IndexedDB; a failure there is reported but does not stop the save. */
  keep({ bytes, base, version }) {
    if (!this.store) return Promise.resolve();
    return this.store
      .put({ assignment: this.assignmentId, username: this.username, base, source: this.source, bytes, version })
      .catch((error) => console.warn("mriannot: could not keep edits in IndexedDB", error));
  }

  handleFailure(error) {
    if (error instanceof OfflineError) {
      this.setState(STATE.OFFLINE, { message: "Offline: your edits are kept in this browser and sent when the network returns." });
      this.retryLater();
    } else if (error instanceof ApiError && error.status === 409 && error.code === "stale_revision") {
      this.setState(STATE.CONFLICT, {
        message: error.message,
        currentRevision: error.body.current_revision ?? null,
        base: this.base,
      });
    } else if (error instanceof ApiError && error.status === 409 && error.code === "submitted") {
      this.setState(STATE.SUBMITTED, { message: error.message });
    } else if (error instanceof ApiError && (error.status >= 500 || error.status === 401 || error.status === 403)) {
      const hint =
        error.status === 401
          ? "You are logged out: log in again (in another tab) and the edits kept in this browser will be sent."
          : error.message;
      this.setState(STATE.ERROR, { message: hint, status: error.status });
      this.retryLater();
    } else {
      // 400 / 413 and the like: retrying the same bytes cannot help; the message says what to fix.
      this.setState(STATE.ERROR, { message: error.message, status: error.status });
    }
  }

  retryLater() {
    this.saveSoon(this.retryMs);
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
  }

  /** Conflict answer "keep mine": save the current labels as a new revision on top of theirs. */
  async keepMine(currentRevision) {
    this.base = currentRevision;
    this.setState(STATE.UNSAVED);
    await this.save();
  }

  /** Conflict answer "reload theirs" (or any fresh start): the screen now shows ``revision``. */
  async resetTo(revision) {
    clearTimeout(this.timer);
    this.base = revision;
    this.savedVersion = this.version;
    this.source = "manual";
    if (this.store) await this.store.delete(this.assignmentId).catch(() => {});
    this.setState(STATE.SAVED, {});
  }

  /** The assignment was submitted: no more saves. */
  freeze() {
    clearTimeout(this.timer);
    this.setState(STATE.SUBMITTED, {});
  }
}
