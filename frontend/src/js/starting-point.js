// Where the labels on screen start from, in this order:
//   1. edits kept in this browser that never reached the server (offline, closed tab)
//   2. the annotator's own latest revision
//   3. the model's pre-label, under the project's pre-label policy (active learning; see
//      fetchPrelabel): "applied" starts from it; "offered" starts empty and offers it (the rater
//      chooses: kind "offer"); "off" never asks for it
//   4. an empty label volume
//
// Blinding: only the assignment's own annotator ever gets here (annotate.js checks), and every
// request names this assignment's own revisions; the server answers 404 for anyone else's.
import { ApiError, api } from "./api.js";

/**
 * The model's pre-label for this assignment (active learning), or null when there is none:
 * GET assignments/{id}/prelabel/ answers a uint8 .nii.gz on the scan's grid, or 404
 * ("no_prelabel") when the project offers none or no model has scored the scan yet.
 * The first save of a pre-labelled assignment is stored with source=prelabel, which is how
 * the server measures the editing effort (Dice of the pre-label against the submitted labels).
 * @returns {Promise<{bytes: ArrayBuffer, modelVersion: string|null}|null>}
 */
export async function fetchPrelabel(assignment, project) {
  const policy = assignment.prelabel_policy ?? project?.prelabel_policy;
  if (policy === "off") return null;
  try {
    const response = await api.prelabel(assignment.id);
    return { bytes: await response.arrayBuffer(), modelVersion: response.headers.get("X-Model-Version") };
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return null;
    throw error;
  }
}

/**
 * @typedef {object} StartingPoint
 * @property {"local"|"revision"|"prelabel"|"offer"|"empty"} kind "offer": empty, with ``offer`` to choose
 * @property {{bytes: ArrayBuffer, modelVersion: string|null}|null} [offer] the pre-label the rater may start from
 * @property {ArrayBuffer|Uint8Array|null} bytes the label volume, or null for empty
 * @property {number|null} base the revision the labels start from (what the next save names)
 * @property {string} source source of the next save
 * @property {boolean} unsaved the labels are not on the server yet
 * @property {object|null} stale kept edits whose base is no longer the latest revision
 * @property {string} description for people
 */

/**
 * @param {object} args
 * @param {{id:number, head_revision:number|null, prelabel_policy?: string}} args.assignment
 * @param {object} args.project
 * @param {string} args.username
 * @param {import("./offline-store.js").OfflineStore|null} args.store
 * @returns {Promise<StartingPoint>}
 */
export async function loadStartingPoint({ assignment, project, username, store }) {
  const head = assignment.head_revision;
  const [kept, headBytes] = await Promise.all([
    store ? store.get(assignment.id).catch(() => undefined) : undefined,
    head ? api.revisionLabels(head) : null,
  ]);
  const mine = kept && kept.username === username ? kept : null;
  if (mine && mine.base === head) {
    return {
      kind: "local",
      bytes: mine.bytes,
      base: head,
      source: mine.source || "manual",
      unsaved: true,
      stale: null,
      description: "your edits kept in this browser (not yet on the server); they are being saved",
    };
  }
  const stale = mine && mine.base !== head ? mine : null;
  if (head) {
    return {
      kind: "revision",
      bytes: headBytes,
      base: head,
      source: "manual",
      unsaved: false,
      stale,
      description: `your latest revision (#${head})`,
    };
  }
  const prelabel = await fetchPrelabel(assignment, project);
  if (prelabel && (assignment.prelabel_policy ?? project?.prelabel_policy) === "offered") {
    return {
      kind: "offer",
      bytes: null,
      base: null,
      source: "manual",
      unsaved: false,
      stale,
      offer: prelabel,
      description: "an empty label volume (the model's pre-label is offered: choose above)",
    };
  }
  if (prelabel) {
    const model = prelabel.modelVersion ? ` (model version ${prelabel.modelVersion})` : "";
    return {
      kind: "prelabel",
      bytes: prelabel.bytes,
      base: null,
      source: "prelabel",
      unsaved: true,
      stale,
      description: `the model's pre-label${model}: correct it; it is saved as your first revision`,
    };
  }
  return { kind: "empty", bytes: null, base: null, source: "manual", unsaved: false, stale, description: "an empty label volume" };
}
