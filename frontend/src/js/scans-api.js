// The API of the Scans page (/api/v1/): the paged scan list, one scan's split and metadata,
// splits by rule, metadata from a CSV, uploads (one NIfTI, or a .zip of them) with their
// upload progress, a scan's sequences (channels), and DICOM imports (a job: upload, follow,
// correct roles, confirm or discard). The server refuses annotators all of it but their own
// scans in the list.
import { ApiError, OfflineError, csrfToken, request } from "./api.js";

const BASE = "/api/v1/";

/**
 * One page of the project's scans.
 * @param {number} projectId
 * @param {{status?:string, split?:string, q?:string, limit:number, offset:number}} query
 * @returns {Promise<{rows: object[], total: number}>} ``total``: the scans that match (X-Total-Count)
 */
export async function scanPage(projectId, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== "" && value !== null && value !== undefined) params.set(key, String(value));
  }
  const response = await request(`projects/${projectId}/scans/?${params}`, { expect: "response" });
  const rows = await response.json();
  return { rows, total: Number(response.headers.get("X-Total-Count") ?? rows.length) };
}

export const scansApi = {
  /** Columns, vocabularies and limits of scan metadata. */
  vocabulary: (projectId) => request(`projects/${projectId}/scan-metadata/`),
  /** Change a scan's split and/or metadata; 409 split_frozen (with model_versions) unless overridden. */
  updateScan: (scanId, fields) => request(`scans/${scanId}/`, { method: "PATCH", json: fields }),
  previewSplit: (projectId, rule) => request(`projects/${projectId}/splits/preview/`, { method: "POST", json: rule }),
  applySplit: (projectId, rule) => request(`projects/${projectId}/splits/`, { method: "POST", json: rule }),
  /** Preview (apply=false) or apply a metadata CSV. */
  metadataCsv: (projectId, file, apply) => {
    const form = new FormData();
    form.append("file", file);
    form.append("apply", apply ? "true" : "false");
    return request(`projects/${projectId}/scan-metadata/`, { method: "POST", body: form });
  },
};

/**
 * POST a multipart form with XMLHttpRequest, which reports upload progress (fetch does not).
 * Resolves with the JSON answer of a 2xx; rejects with an ApiError (the server refused, with
 * its JSON error body) or an OfflineError (no answer).
 * @param {string} path relative to /api/v1/
 * @param {FormData} form
 * @param {{onProgress?: (loaded:number, total:number) => void, onSent?: () => void}} [callbacks]
 */
export function postWithProgress(path, form, { onProgress, onSent } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", BASE + path);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress?.(event.loaded, event.total);
    });
    xhr.upload.addEventListener("load", () => onSent?.());
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = { error: "error", detail: `The server answered ${xhr.status} ${xhr.statusText}.` };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new OfflineError(new Error("network error"))));
    xhr.addEventListener("abort", () => reject(new OfflineError(new Error("aborted"))));
    xhr.send(form);
  });
}

/**
 * Upload one file: a NIfTI to projects/{id}/scans/, a .zip to projects/{id}/scan-archives/.
 * @param {number} projectId
 * @param {File} file
 * @param {Record<string,string>} fields the batch's metadata and split (empty values are left out)
 * @param {object} [callbacks] see postWithProgress
 */
export function uploadScanFile(projectId, file, fields, callbacks) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (value !== "" && value !== null && value !== undefined) form.append(key, value);
  }
  form.append("file", file, file.name);
  const path = isZip(file) ? `projects/${projectId}/scan-archives/` : `projects/${projectId}/scans/`;
  return postWithProgress(path, form, callbacks);
}

/** True for a .zip archive (by name: browsers give zips several media types). */
export function isZip(file) {
  return /\.zip$/i.test(file.name);
}

/** A scan's sequences (the scan's own image first, then the declared ones, ``present`` or not). */
export const channelsApi = {
  list: (scanId) => request(`scans/${scanId}/channels/`),
  /** Upload a NIfTI as a declared sequence of the scan (resampled onto its grid when needed). */
  add: (scanId, role, file, callbacks) => {
    const form = new FormData();
    form.append("role", role);
    form.append("file", file, file.name);
    return postWithProgress(`scans/${scanId}/channels/`, form, callbacks);
  },
};

/** DICOM imports: one background job per study (docs/dicom.md). */
export const dicomApi = {
  /**
   * Upload a zipped study; resolves with the job (202), its state "queued".
   * @param {number} projectId
   * @param {Blob} file a .zip (a File, or a Blob zipped in the browser)
   * @param {{split?: string, auto_confirm?: boolean}} fields
   * @param {object} [callbacks] see postWithProgress
   */
  upload: (projectId, file, { split = "unassigned", auto_confirm = false } = {}, callbacks) => {
    const form = new FormData();
    form.append("split", split);
    form.append("auto_confirm", auto_confirm ? "true" : "false");
    form.append("file", file, file.name || "study.zip");
    return postWithProgress(`projects/${projectId}/dicom-studies/`, form, callbacks);
  },
  list: (projectId) => request(`projects/${projectId}/dicom-imports/`),
  get: (importId) => request(`dicom-imports/${importId}/`),
  /** ``roles``: {series index in the import: role}. */
  setRoles: (importId, roles) => request(`dicom-imports/${importId}/`, { method: "PATCH", json: { roles } }),
  confirm: (importId, roles = {}) => request(`dicom-imports/${importId}/confirm/`, { method: "POST", json: { roles } }),
  discard: (importId) => request(`dicom-imports/${importId}/`, { method: "DELETE" }),
};
