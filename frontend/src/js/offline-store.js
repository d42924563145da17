// Unsent edits kept in the browser (IndexedDB), one record per assignment.
//
// A record is written before each save is sent and deleted once the server holds that exact
// version, so edits survive a dropped network, a closed tab or a crashed browser; the viewer
// offers them again the next time the assignment is opened, by the same user only.

const DB_NAME = "mriannot";
const DB_VERSION = 1;
const STORE = "pending";

function promisify(request) {
  return new Promise((resolve, reject) => {
    request.addEventListener("success", () => resolve(request.result));
    request.addEventListener("error", () => reject(request.error));
  });
}

/**
 * @typedef {object} PendingEdit
 * @property {number} assignment assignment id (the key)
 * @property {string} username whose edits these are
 * @property {number|null} base revision the edits start from
 * @property {string} source revision source to save with ("manual" or "prelabel")
 * @property {Uint8Array} bytes the label volume as gzip NIfTI
 * @property {number} version the viewer's edit counter when the record was written
 * @property {number} savedAt Date.now() when written
 */

export class OfflineStore {
  constructor() {
    this.db = null;
  }

  async open() {
    if (this.db) return this.db;
    if (!("indexedDB" in window)) throw new Error("This browser has no IndexedDB: edits cannot be kept offline.");
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.addEventListener("upgradeneeded", () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE, { keyPath: "assignment" });
    });
    this.db = await promisify(request);
    return this.db;
  }

  async transaction(mode, work) {
    const db = await this.open();
    const tx = db.transaction(STORE, mode);
    const done = new Promise((resolve, reject) => {
      tx.addEventListener("complete", resolve);
      tx.addEventListener("error", () => reject(tx.error));
      tx.addEventListener("abort", () => reject(tx.error || new Error("IndexedDB transaction aborted")));
    });
    const result = await work(tx.objectStore(STORE));
    await done;
    return result;
  }

  /** @param {PendingEdit} record */
  put(record) {
    return this.transaction("readwrite", (store) => promisify(store.put({ ...record, savedAt: Date.now() })));
  }

  /** @returns {Promise<PendingEdit|undefined>} */
  get(assignment) {
    return this.transaction("readonly", (store) => promisify(store.get(assignment)));
  }

  /** Delete the record, but only if it is still the given version (a newer edit is kept). */
  deleteIfVersion(assignment, version) {
    return this.transaction("readwrite", async (store) => {
      const record = await promisify(store.get(assignment));
      if (record && (version === undefined || record.version <= version)) await promisify(store.delete(assignment));
    });
  }

  delete(assignment) {
    return this.deleteIfVersion(assignment, undefined);
  }
}
