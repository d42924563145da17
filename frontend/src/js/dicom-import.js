// The Scans page's DICOM import: a zipped study (or a folder, zipped here in the browser) goes up
// with a progress bar; the server analyses it as a background job (every series checked,
// de-identified and converted), which this panel follows ("series 3 of 7"); then the table of
// series, each with its guessed role preselected (refused ones greyed, with their reason) and
// what will become of it (a scan, a further sequence of one, or left out and why); a role
// changed here is saved at once (the plan is the server's); Confirm creates the scans, Discard
// drops the import. The panel picks up an import still waiting or running when the page opens.
//
// States of the panel (#dicom-card's data-state): idle, uploading, queued, analysing, review,
// creating, done, failed, discarded.
import { ApiError } from "./api.js";
import { pollJob, waitingText } from "./poll.js";
import { dicomApi } from "./scans-api.js";
import { $ } from "./session.js";
import { cell, fillBody, fmt, humanSize, link, row } from "./tables.js";

const BUSY = new Set(["queued", "analysing", "creating"]);
const COLUMNS = 6;
const PLAN_TEXT = {
  scan: "becomes a scan",
  channel: "sequence",
  superseded: "left out",
  not_declared: "left out",
  no_reference: "left out",
};
const STATUS_TEXT = {
  stored: "stored",
  duplicate: "duplicate",
  refused: "refused",
  superseded: "left: superseded",
  not_declared: "left: not declared",
  no_reference: "left: no reference series",
};

// --- a folder, zipped in the browser ---------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 of bytes (as zip needs it). */
export function crc32(bytes, crc = 0) {
  let c = crc ^ 0xffffffff;
  for (let i = 0; i < bytes.length; i += 1) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A zip (stored, not compressed) of files under neutral names ("000001", ...): a folder's paths
 * may name the patient, so they never leave the browser. Reads one file at a time.
 * @param {File[]} files
 * @param {(done: number, total: number) => void} [onProgress]
 * @returns {Promise<Blob>}
 */
export async function zipFiles(files, onProgress) {
  if (files.length > 65535) throw new Error(`${files.length} files: zip the folder yourself (at most 65,535 here).`);
  const parts = [];
  const central = [];
  let offset = 0;
  for (let n = 0; n < files.length; n += 1) {
    const data = new Uint8Array(await files[n].arrayBuffer());
    const name = new TextEncoder().encode(String(n + 1).padStart(6, "0"));
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(12, 0x21, true); // 1980-01-01
    local.setUint32(14, crc, true);
    local.setUint32(18, data.length, true);
    local.setUint32(22, data.length, true);
    local.setUint16(26, name.length, true);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true);
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint16(14, 0x21, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, data.length, true);
    entry.setUint32(24, data.length, true);
    entry.setUint16(28, name.length, true);
    entry.setUint32(42, offset, true);
    parts.push(local, name, data);
    central.push(entry, name);
    offset += 30 + name.length + data.length;
    if (offset > 0xfffffffe) throw new Error("The folder is larger than 4 GiB: zip it yourself, or split the study.");
    onProgress?.(n + 1, files.length);
  }
  const size = central.reduce((sum, part) => sum + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

// --- the panel -------------------------------------------------------------------------------------

function text(tag, content, className = "") {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}

function scanLink(scanId) {
  const a = link(`/review/${scanId}/`, `scan ${scanId}`);
  a.dataset.scan = String(scanId);
  return a;
}

function timings(series) {
  const ms = (v) => (typeof v === "number" ? fmt(v, v < 100 ? 1 : 0) : "–");
  return `${ms(series.tr)} / ${ms(series.te)} / ${ms(series.ti)}`;
}

function grid(series) {
  if (!series.shape) return "–";
  const spacing = series.spacing ? ` · ${series.spacing.map((v) => fmt(v, 2)).join(" × ")} mm` : "";
  return `${series.shape.join(" × ")}${spacing}`;
}

/** What became (or will become) of a series, for its last cell. */
function outcome(series) {
  const wrap = document.createElement("span");
  if (series.status === "ready") {
    wrap.append(text("strong", PLAN_TEXT[series.plan] || series.plan || "ready"));
    if (series.plan !== "scan" && series.plan_detail) wrap.append(` · ${series.plan_detail}`);
    if (series.duplicate_of) wrap.append(" (already ", scanLink(series.duplicate_of), ")");
    return wrap;
  }
  const status = STATUS_TEXT[series.status] || series.status;
  wrap.append(text("strong", status, series.status === "stored" ? "result-ok" : series.status === "refused" ? "reason" : ""));
  if (series.status === "stored" && series.scan) {
    wrap.append(" · ", series.channel ? `the ${series.channel} sequence of ` : "as ", scanLink(series.scan));
    if (series.resampled) wrap.append(" (resampled onto its grid)");
  } else if (series.status === "duplicate" && series.scan) {
    wrap.append(" · ", scanLink(series.scan), ` already holds it`);
  } else if (series.detail) {
    wrap.append(` · ${series.detail}`);
  }
  return wrap;
}

export class DicomImportPanel {
  /**
   * @param {number} projectId
   * @param {{onCreated?: () => void, splits?: [string, string][]}} [options] ``onCreated``: after scans were created
   */
  constructor(projectId, { onCreated, splits = [] } = {}) {
    this.projectId = projectId;
    this.onCreated = onCreated;
    this.job = null;
    this.state = "idle";
    this.busy = false;
    this.seenQueuedAt = null;
    $("dicom-split").replaceChildren(
      ...splits.map(([value, label]) => Object.assign(document.createElement("option"), { value, textContent: label })),
    );
    $("dicom-split").value = "unassigned";
    $("dicom-file").addEventListener("change", () => {
      const file = $("dicom-file").files[0];
      $("dicom-file").value = "";
      if (file) this.upload(file).catch((error) => this.fail(error));
    });
    $("dicom-folder").addEventListener("change", () => {
      const files = [...$("dicom-folder").files];
      $("dicom-folder").value = "";
      if (files.length) this.uploadFolder(files).catch((error) => this.fail(error));
    });
    $("dicom-confirm").addEventListener("click", () => this.confirm().catch((error) => this.fail(error)));
    $("dicom-discard").addEventListener("click", () => this.discard().catch((error) => this.fail(error)));
  }

  /** Show the latest import when it still waits for review, runs, or failed creating its scans
   * (a page opened again). */
  async resume() {
    const [latest] = await dicomApi.list(this.projectId);
    const stuck = latest?.state === "failed" && latest.phase === "create"; // it may be confirmed again
    if (latest && (latest.state === "review" || BUSY.has(latest.state) || stuck)) {
      this.show(latest);
      if (BUSY.has(latest.state)) this.follow(latest.id).catch((error) => this.fail(error)); // the page is ready meanwhile
    }
  }

  setState(state) {
    this.state = state;
    $("dicom-card").dataset.state = state;
    const busy = state === "uploading" || BUSY.has(state);
    for (const id of ["dicom-file", "dicom-folder"]) $(id).disabled = busy || state === "review";
  }

  progress(value, message) {
    $("dicom-progress-box").hidden = false;
    $("dicom-progress").value = value;
    $("dicom-status").textContent = message;
  }

  error(error) {
    const box = $("dicom-error");
    box.textContent = error ? (error instanceof ApiError ? error.message : `${error.message || error}`) : "";
    box.hidden = !error;
  }

  fail(error) {
    this.error(error);
    if (this.state === "uploading") {
      this.setState("idle");
      $("dicom-progress-box").hidden = true;
    }
    this.busy = false;
  }

  async uploadFolder(files) {
    this.error(null);
    this.setState("uploading");
    this.progress(0, `Zipping ${files.length} files…`);
    const zipped = await zipFiles(files, (done, total) => {
      if (done % 20 === 0 || done === total) this.progress(done / total, `Zipping file ${done} of ${total}…`);
    });
    await this.upload(new File([zipped], "study.zip", { type: "application/zip" }));
  }

  async upload(file) {
    this.error(null);
    $("dicom-review").hidden = true;
    $("dicom-summary").hidden = true;
    this.setState("uploading");
    this.progress(0, `Uploading the study (${humanSize(file.size)})…`);
    const job = await dicomApi.upload(
      this.projectId,
      file,
      { split: $("dicom-split").value, auto_confirm: $("dicom-auto").checked },
      {
        onProgress: (loaded, total) =>
          this.progress(total ? loaded / total : 0, `Uploading the study: ${Math.round((100 * loaded) / (total || 1))} %`),
        onSent: () => this.progress(1, "Uploaded; the server checks the archive…"),
      },
    );
    this.show(job);
    await this.follow(job.id);
  }

  async follow(importId) {
    this.seenQueuedAt = null;
    const job = await pollJob(() => dicomApi.get(importId), {
      onUpdate: (answer) => this.show(answer),
      intervalMs: 500,
      timeoutMs: 2 * 60 * 60 * 1000,
    });
    this.show(job);
    if (job.state === "done" && job.summary?.stored) this.onCreated?.();
    return job;
  }

  /** Render the job: the bar while it runs, the table of series, the summary when done. */
  show(job) {
    this.job = job;
    this.setState(job.state);
    const card = $("dicom-card");
    card.dataset.import = String(job.id);
    if (job.state === "queued") {
      this.seenQueuedAt ??= Date.now();
      const waiting = waitingText(job, { seenQueuedAt: this.seenQueuedAt });
      this.progress(0, `Queued${waiting ? `: ${waiting}` : ": waiting for a worker…"}`);
    } else if (job.state === "analysing") {
      this.progress(job.progress, `Analysing: ${job.message}`);
    } else if (job.state === "creating") {
      this.progress(job.progress, `Creating the scans: ${job.message}`);
    } else {
      $("dicom-progress-box").hidden = true;
    }
    if (job.state === "failed") this.error(new Error(`The import failed: ${job.error}`));
    this.renderSeries(job);
    this.renderSummary(job);
  }

  renderSeries(job) {
    const review = job.state === "review";
    const retry = job.state === "failed" && job.phase === "create"; // confirming again sends it again
    const shown = job.series.length > 0 && job.state !== "discarded";
    $("dicom-review").hidden = !shown;
    $("dicom-actions").hidden = !(review || retry);
    if (!shown) return;
    const ready = job.series.filter((s) => s.status === "ready").length;
    const refused = job.series.filter((s) => s.status === "refused").length;
    const declared = job.channels.length ? `The project's scans hold ${job.channels.join(" + ")}: ` +
      `the series of one session make one scan.` : "Each usable series becomes a scan.";
    $("dicom-review-text").textContent = review
      ? `${job.series.length} series: ${ready} usable, ${refused} refused. Check the guessed roles (a change is saved at once), ` +
        `then create the scans. ${declared}`
      : `${job.series.length} series${BUSY.has(job.state) && job.state !== "creating" ? " so far" : ""}.`;
    const rows = job.series.map((series) => {
      const role = document.createElement("select");
      role.setAttribute("aria-label", `Role of series ${series.index}`);
      role.dataset.series = String(series.index);
      role.replaceChildren(
        ...job.roles.map((r) => Object.assign(document.createElement("option"), { value: r, textContent: r })),
      );
      role.value = series.role ?? "other";
      role.disabled = !review || series.status !== "ready" || this.busy;
      role.title = series.role_guess ? `guessed: ${series.role_guess}` : "";
      role.addEventListener("change", () => this.setRole(series.index, role.value).catch((error) => this.fail(error)));
      const number = cell(series.series_number ?? "?", { num: true, title: `series ${series.index} of the study` });
      return row(
        [
          number,
          cell(series.slices ?? "–", { num: true }),
          cell(timings(series)),
          cell(grid(series)),
          cell(role),
          cell(outcome(series), { className: "outcome" }),
        ],
        { series: series.index, status: series.status, plan: series.plan ?? "", role: series.role ?? "" },
      );
    });
    fillBody($("dicom-body"), rows, { empty: "No series.", columns: COLUMNS });
    for (const tr of $("dicom-body").querySelectorAll("tr")) {
      tr.classList.toggle("refused", tr.dataset.status === "refused");
      const fate = tr.dataset.status === "ready" ? tr.dataset.plan : tr.dataset.status;
      tr.classList.toggle("left", ["superseded", "not_declared", "no_reference"].includes(fate));
    }
    $("dicom-confirm").disabled = !(review || retry) || ready === 0 || this.busy;
    $("dicom-confirm").textContent = retry ? "Try again" : ready ? "Create the scans" : "Nothing to create";
  }

  renderSummary(job) {
    const box = $("dicom-summary");
    if (job.state !== "done" && job.state !== "discarded") {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    if (job.state === "discarded") {
      box.className = "muted";
      box.textContent = `Import ${job.id} discarded: no scan was made, its converted series were removed.`;
      return;
    }
    const s = job.summary;
    const left = (s.superseded || 0) + (s.not_declared || 0) + (s.no_reference || 0);
    const scans = [...new Set(job.series.filter((r) => r.status === "stored").map((r) => r.scan))];
    box.className = s.stored ? "result-ok" : "";
    box.replaceChildren(
      `Done: ${s.stored} series stored` + (scans.length ? ` as ${scans.length} scan${scans.length === 1 ? "" : "s"} (` : ""),
      ...scans.flatMap((id, i) => (i ? [", ", scanLink(id)] : [scanLink(id)])),
      scans.length ? ")" : "",
      `; ${s.duplicate} duplicate, ${left} left out, ${s.refused} refused` +
        (job.ignored_files ? `; ${job.ignored_files} file${job.ignored_files === 1 ? "" : "s"} not DICOM images.` : "."),
    );
  }

  async setRole(index, role) {
    this.busy = true;
    try {
      this.show(await dicomApi.setRoles(this.job.id, { [index]: role }));
      this.error(null);
    } catch (error) {
      this.show(await dicomApi.get(this.job.id)); // the server's roles, not the select's
      throw error;
    } finally {
      this.busy = false;
      if (this.job) this.renderSeries(this.job);
    }
  }

  async confirm() {
    this.busy = true;
    $("dicom-confirm").disabled = true;
    this.error(null);
    try {
      this.show(await dicomApi.confirm(this.job.id));
    } finally {
      this.busy = false;
    }
    await this.follow(this.job.id);
  }

  async discard() {
    if (!window.confirm("Discard this import? Its converted series are removed and no scan is made.")) return;
    this.show(await dicomApi.discard(this.job.id));
  }
}
