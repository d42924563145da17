// The API of the lead and admin pages (/api/v1/): agreement, review, consensus runs, ground
// truths, exports. The server answers 403 (or 404) to annotators for all of it (blinding).
// Requests go through api.js's request(), so errors are the same ApiError / OfflineError.
import { request, requestAll } from "./api.js";

const BASE = "/api/v1/";

/** The agreement tables the server offers as CSV (GET projects/{id}/agreement/?table=NAME). */
export const AGREEMENT_TABLES = ["scans", "pairs", "per_label", "per_rater", "rater_matrix", "over_time", "by_metadata"];

export const leadApi = {
  agreement: (projectId) => request(`projects/${projectId}/agreement/`),
  /** Address of one agreement table as CSV (a plain link: the browser downloads it). */
  agreementCsvUrl: (projectId, table) => `${BASE}projects/${projectId}/agreement/?table=${encodeURIComponent(table)}`,
  flaggedScans: (projectId) => requestAll(`projects/${projectId}/flagged-scans/`),
  models: (projectId) => requestAll(`projects/${projectId}/models/`),
  model: (versionId) => request(`models/${versionId}/`),
  /** Ask for a new model version (202; a version already queued or training is returned instead). */
  requestModel: (projectId) => request(`projects/${projectId}/models/`, { method: "POST" }),
  /** The open scans in worklist order, and the note saying what orders them. */
  ranking: (projectId) => requestAll(`projects/${projectId}/ranking/`, { key: "scans" }),

  review: (scanId) => request(`scans/${scanId}/review/`),
  /** Every rater's assignment of a scan (status, latest revision, why it was sent back). */
  assignments: (scanId) => requestAll(`assignments/?scan=${scanId}`),
  /** Send a rater's submission back for rework; the comment (required) says why. */
  returnAssignment: (assignmentId, comment) =>
    request(`assignments/${assignmentId}/return/`, { method: "POST", json: { comment } }),
  run: (runId) => request(`consensus-runs/${runId}/`),
  runLabels: (runId) => request(`consensus-runs/${runId}/labels/`, { expect: "bytes" }),
  runUncertainty: (runId) => request(`consensus-runs/${runId}/uncertainty/`, { expect: "bytes" }),
  /**
   * Ask for a consensus run of the scan's submitted revisions (202; the same inputs give the same run).
   * @returns {Promise<{id:number, status:string, reused:boolean}>}
   */
  requestRun: (scanId, method, options) =>
    request(`scans/${scanId}/consensus-runs/`, { method: "POST", json: { method, options } }),

  groundTruths: (scanId) => request(`scans/${scanId}/ground-truths/`),
  groundTruthLabels: (truthId) => request(`ground-truths/${truthId}/labels/`, { expect: "bytes" }),
  /** Accept a finished run as the scan's ground truth (201). */
  acceptRun: (scanId, runId, note = "") =>
    request(`scans/${scanId}/ground-truths/`, { method: "POST", json: { run: runId, note } }),
  /** Save an edited label map (NIfTI bytes on the scan's grid) as the scan's ground truth (201). */
  saveEditedTruth: (scanId, bytes, { runId = null, note = "" } = {}) => {
    const query = new URLSearchParams();
    if (runId) query.set("run", String(runId));
    if (note) query.set("note", note);
    return request(`scans/${scanId}/ground-truths/edit/?${query}`, {
      method: "POST",
      body: bytes,
      contentType: "application/octet-stream",
    });
  },

  exports: (projectId) => requestAll(`projects/${projectId}/exports/`),
  /** @param {{format:string, include_raters:boolean, include_posterior:boolean, only_adjudicated:boolean}} options */
  requestExport: (projectId, options) => request(`projects/${projectId}/exports/`, { method: "POST", json: options }),
  export: (exportId) => request(`exports/${exportId}/`),
  exportDownloadUrl: (exportId) => `${BASE}exports/${exportId}/download/`,
};
