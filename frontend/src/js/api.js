// The HTTP API (/api/v1/): JSON and NIfTI bytes, session cookie + CSRF header.
//
// Every failure is thrown as an ApiError (the server answered with an error status) or an
// OfflineError (no answer: the network is down or the server is unreachable), so callers can
// tell "the server refused" from "the server could not be reached".

const BASE = "/api/v1/";

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status
   * @param {{error?: string, detail?: string}} body the server's JSON error body
   */
  constructor(status, body) {
    super(body?.detail || `The server answered ${status}.`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.error || "error";
    this.body = body || {};
  }
}

export class OfflineError extends Error {
  constructor(cause) {
    super("The server cannot be reached: check your network connection.");
    this.name = "OfflineError";
    this.cause = cause;
  }
}

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function errorBody(response) {
  try {
    return await response.json();
  } catch {
    return { error: "error", detail: `The server answered ${response.status} ${response.statusText}.` };
  }
}

/**
 * One request to the API.
 * @param {string} path relative to /api/v1/, e.g. "me/"
 * @param {object} [options]
 * @param {string} [options.method]
 * @param {object} [options.json] body sent as JSON
 * @param {BodyInit} [options.body] raw body
 * @param {string} [options.contentType] content type of a raw body
 * @param {"json"|"bytes"|"response"|"none"} [options.expect] how to read a successful answer
 * @param {AbortSignal} [options.signal]
 */
export async function request(path, { method = "GET", json, body, contentType, expect = "json", signal, keepalive = false } = {}) {
  // Binary answers come as FileResponse; DRF negotiates with its JSON renderer, so accept anything.
  const headers = { Accept: expect === "bytes" || expect === "response" ? "*/*" : "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-CSRFToken"] = csrfToken();
  }
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (body !== undefined && contentType) {
    headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, body, credentials: "same-origin", signal, keepalive, cache: "no-store" });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new OfflineError(error);
  }
  if (!response.ok) {
    throw new ApiError(response.status, await errorBody(response));
  }
  if (expect === "none" || response.status === 204) return null;
  if (expect === "response") return response;
  if (expect === "bytes") return response.arrayBuffer();
  return response.json();
}

/** The path (relative to /api/v1/) of a response's ``Link: <...>; rel="next"``, or null on the last page. */
export function nextPage(response) {
  const link = response.headers.get("Link") || "";
  const match = link.match(/<([^>]+)>\s*;\s*rel="next"/);
  if (!match) return null;
  const url = new URL(match[1], window.location.origin);
  return url.pathname.replace(/^\/api\/v1\//, "") + url.search;
}

/**
 * Every item of a paged list (mriannot/paging.py): the first page, then each ``rel="next"``.
 * @param {string} path relative to /api/v1/
 * @param {object} [options]
 * @param {string} [options.key] the list's name when the answer is an object (e.g. "scans");
 *   the object of the first page is returned with the lists of every page joined
 */
export async function requestAll(path, { key } = {}) {
  let response = await request(path, { expect: "response" });
  const first = await response.json();
  const items = key ? first[key] : first;
  for (let next = nextPage(response); next; next = nextPage(response)) {
    response = await request(next, { expect: "response" });
    const body = await response.json();
    items.push(...(key ? body[key] : body));
  }
  return first;
}

/** Set once the user logs out: a request still in flight then fails with 401, and must not send
 * the browser to a log-in page that would come back here. */
let loggingOut = false;

export const api = {
  login: (username, password) => request("auth/login/", { method: "POST", json: { username, password } }),
  logout: () => {
    loggingOut = true;
    return request("auth/logout/", { method: "POST", expect: "none" });
  },
  me: () => request("me/"),
  worklist: (projectId) => requestAll(projectId ? `me/worklist/?project=${projectId}` : "me/worklist/"),
  projects: () => requestAll("projects/"),
  project: (id) => request(`projects/${id}/`),
  assignment: (id) => request(`assignments/${id}/`),
  scan: (id) => request(`scans/${id}/`),
  scanImage: (id) => request(`scans/${id}/image/`, { expect: "bytes" }),
  /** A scan's sequences, its own image first: [{role, reference, present, resampled, coverage, image}]. */
  scanChannels: (id) => request(`scans/${id}/channels/`),
  /** One sequence of a scan (.nii.gz on the scan's grid), the scan's own image included. */
  scanChannelImage: (id, role) => request(`scans/${id}/channels/${encodeURIComponent(role)}/image/`, { expect: "bytes" }),
  revisionLabels: (id) => request(`revisions/${id}/labels/`, { expect: "bytes" }),
  /** The model's pre-label of the assignment (active learning): the raw Response (.nii.gz). */
  prelabel: (assignmentId) => request(`assignments/${assignmentId}/prelabel/`, { expect: "response" }),
  /**
   * Save a label volume as a new revision of the assignment.
   * @param {number} assignmentId
   * @param {Uint8Array} bytes NIfTI (plain or gzip)
   * @param {number|null} baseRevision the revision these labels start from
   * @param {string} source "manual" or "prelabel"
   */
  saveRevision: (assignmentId, bytes, baseRevision, source = "manual", { keepalive = false } = {}) =>
    request(
      `assignments/${assignmentId}/revisions/?base_revision=${baseRevision ?? "none"}&source=${encodeURIComponent(source)}`,
      { method: "POST", body: bytes, contentType: "application/octet-stream", keepalive },
    ),
  /**
   * A server operation on the label volume (islands, margin, smooth, interpolate, grow): the
   * answer is the resulting volume (gzip NIfTI on the same grid) with X-Changed-Voxels and
   * X-Operation-Ms; nothing is saved. Returns the raw Response.
   * @param {number} assignmentId
   * @param {string} operation e.g. "islands"
   * @param {Record<string, string|number>} params query parameters
   * @param {Uint8Array} bytes the label volume (gzip NIfTI), as a revision save sends it
   */
  operation: (assignmentId, operation, params, bytes) =>
    request(`assignments/${assignmentId}/operations/${encodeURIComponent(operation)}/?${new URLSearchParams(params)}`, {
      method: "POST",
      body: bytes,
      contentType: "application/octet-stream",
      expect: "response",
    }),
  submit: (assignmentId, revisionId) =>
    request(`assignments/${assignmentId}/submit/`, { method: "POST", json: revisionId ? { revision: revisionId } : {} }),
  /** A scan's comments the user may read (a lead: every thread, or one with ``assignmentId``). */
  comments: (scanId, assignmentId = null) =>
    requestAll(assignmentId ? `scans/${scanId}/comments/?assignment=${assignmentId}` : `scans/${scanId}/comments/`),
  /** Add a comment: to a rater's thread (``assignmentId``; a rater: their own), or a note among leads. */
  addComment: (scanId, text, assignmentId = null) =>
    request(`scans/${scanId}/comments/`, { method: "POST", json: assignmentId ? { text, assignment: assignmentId } : { text } }),
};

/** True when the error means "log in (again)". */
export function isAuthError(error) {
  return error instanceof ApiError && (error.status === 401 || (error.status === 403 && error.code === "not_authenticated"));
}

/** Send the browser to the log-in page, coming back here afterwards (not after a log-out). */
export function redirectToLogin() {
  if (loggingOut) {
    window.location.assign("/login/");
    return;
  }
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/login/?next=${encodeURIComponent(next)}`);
}
