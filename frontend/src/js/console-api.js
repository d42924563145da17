// The API of a lead's project pages (/api/v1/): projects, settings, label schema, members,
// assignments, accounts. The server refuses annotators all of it (403) and hides projects
// from non-members (404). Requests go through api.js's request(): errors are ApiError / OfflineError.
import { request, requestAll } from "./api.js";

/** One page of a list and its total (``X-Total-Count``): for pages that show the first items of a long list. */
async function firstPage(path) {
  const response = await request(path, { expect: "response" });
  const items = await response.json();
  return { items, total: Number(response.headers.get("X-Total-Count") ?? items.length) };
}

export const consoleApi = {
  createProject: (fields) => request("projects/", { method: "POST", json: fields }),
  updateProject: (projectId, fields) => request(`projects/${projectId}/`, { method: "PATCH", json: fields }),
  /** Counts of the project's home page: scans by stage, progress, assignments, members, schema lock. */
  summary: (projectId) => request(`projects/${projectId}/summary/`),

  labels: (projectId) => request(`projects/${projectId}/labels/`),
  addLabel: (projectId, label) => request(`projects/${projectId}/labels/`, { method: "POST", json: label }),
  updateLabel: (projectId, labelId, fields) =>
    request(`projects/${projectId}/labels/${labelId}/`, { method: "PATCH", json: fields }),
  deleteLabel: (projectId, labelId) => request(`projects/${projectId}/labels/${labelId}/`, { method: "DELETE" }),

  members: (projectId) => requestAll(`projects/${projectId}/members/`),
  addMember: (projectId, username, role) =>
    request(`projects/${projectId}/members/`, { method: "POST", json: { username, role } }),
  setRole: (projectId, memberId, role) =>
    request(`projects/${projectId}/members/${memberId}/`, { method: "PATCH", json: { role } }),
  /** @returns {Promise<{reassigned: {assignment:number, annotator:string}[], deleted: number[]}>} */
  removeMember: (projectId, memberId) => request(`projects/${projectId}/members/${memberId}/`, { method: "DELETE" }),
  /** Site admins only. */
  createUser: (username, password, email) => request("users/", { method: "POST", json: { username, password, email } }),

  /** One row per rater with their figures, computed by the server (SQL aggregates), whatever the project's size. */
  raterStats: (projectId) => requestAll(`projects/${projectId}/raters/`),
  /** The first page of the project's open assignments (each with its scan's raters) and how many there are. */
  openAssignments: (projectId, limit = 100) =>
    firstPage(`assignments/?project=${projectId}&status=open&limit=${limit}`),
  /** The first page of the project's scans (optionally of one status), each with its raters, and the total. */
  scans: (projectId, { status = "", limit = 500 } = {}) =>
    firstPage(`projects/${projectId}/scans/?limit=${limit}${status ? `&status=${encodeURIComponent(status)}` : ""}`),
  scan: (scanId) => request(`scans/${scanId}/`),
  /** How many raters a scan has (the total of its assignments). */
  raterCount: async (scanId) => (await firstPage(`assignments/?scan=${scanId}&limit=1`)).total,
  reassign: (assignmentId, annotator) =>
    request(`assignments/${assignmentId}/reassign/`, { method: "POST", json: { annotator } }),
  /** One more rater for a scan; annotator "" = the least-loaded annotator who does not rate it yet. */
  addRater: (scanId, annotator = "") => request(`scans/${scanId}/raters/`, { method: "POST", json: { annotator } }),
};
