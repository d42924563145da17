// The API of a lead's project pages (/api/v1/): projects, settings, label schema, members,
// assignments, accounts. The server refuses annotators all of it (403) and hides projects
// from non-members (404). Requests go through api.js's request(): errors are ApiError / OfflineError.
import { request, requestAll } from "./api.js";

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

  raterStats: (projectId) => request(`projects/${projectId}/raters/`),
  assignments: (projectId) => requestAll(`assignments/?project=${projectId}&limit=500`),
  scans: (projectId) => requestAll(`projects/${projectId}/scans/?limit=500`),
  reassign: (assignmentId, annotator) =>
    request(`assignments/${assignmentId}/reassign/`, { method: "POST", json: { annotator } }),
  /** One more rater for a scan; annotator "" = the least-loaded annotator who does not rate it yet. */
  addRater: (scanId, annotator = "") => request(`scans/${scanId}/raters/`, { method: "POST", json: { annotator } }),
};
