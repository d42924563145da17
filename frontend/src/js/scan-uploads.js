// The Scans page's uploads: files dropped or chosen go into a queue; CONCURRENCY of them go up at
// a time (XMLHttpRequest, for upload progress), each with its own row: a progress bar while it
// goes up, "checking" while the server validates it, then its result. The page stays usable.
//
// States of a file (its row's data-state):
//   queued     waiting for a free slot
//   uploading  bytes going up (the bar shows the fraction sent)
//   checking   all bytes sent; the server validates, stores and assigns it
//   stored     a new scan (linked)
//   duplicate  the same image is already scan N (linked)
//   refused    the server refused it, with its reason (nothing of it was stored)
//   failed     no answer from the server (network); nothing is known to be stored
//   archive    a .zip whose members were each stored, named as duplicates or refused (listed)
import { ApiError } from "./api.js";
import { isZip, uploadScanFile } from "./scans-api.js";
import { humanSize, link } from "./tables.js";

/** Files uploading at once: enough to hide the latency of one, few enough not to crowd the server. */
export const CONCURRENCY = 2;

const NIFTI_NAME = /\.(nii|nii\.gz|zip)$/i;

function scanLink(scanId, text) {
  const a = link(`/review/${scanId}/`, text);
  a.dataset.scan = String(scanId);
  return a;
}

/** A row of the upload table and the file it stands for. */
class UploadItem {
  constructor(file, fields) {
    this.file = file;
    this.fields = fields;
    this.state = "queued";
    this.result = null;
    this.tr = document.createElement("tr");
    this.tr.dataset.file = file.name;
    const name = document.createElement("td");
    name.textContent = file.name;
    const size = document.createElement("td");
    size.className = "num";
    size.textContent = humanSize(file.size);
    this.bar = document.createElement("progress");
    this.bar.max = 1;
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", `Upload of ${file.name}`);
    const progress = document.createElement("td");
    progress.append(this.bar);
    this.resultCell = document.createElement("td");
    this.tr.append(name, size, progress, this.resultCell);
    this.setState("queued", "Waiting…");
  }

  setState(state, content) {
    this.state = state;
    this.tr.dataset.state = state;
    if (content instanceof Node) this.resultCell.replaceChildren(content);
    else this.resultCell.textContent = content;
  }

  progress(loaded, total) {
    this.bar.value = total ? loaded / total : 0;
  }

  checking() {
    this.bar.value = 1;
    this.setState("checking", isZip(this.file) ? "Checking every file of the archive…" : "Checking and storing…");
  }

  stored(scan) {
    this.result = { status: "stored", scan: scan.id };
    const span = document.createElement("span");
    span.className = "result-ok";
    span.append("Stored as ", scanLink(scan.id, `scan ${scan.id}`));
    this.setState("stored", span);
  }

  refused(error) {
    if (error instanceof ApiError && error.code === "duplicate_scan" && error.body.scan) {
      this.result = { status: "duplicate", scan: error.body.scan };
      const span = document.createElement("span");
      span.append("Duplicate of ", scanLink(error.body.scan, `scan ${error.body.scan}`), " (not stored again)");
      this.setState("duplicate", span);
      return;
    }
    const offline = !(error instanceof ApiError);
    this.result = { status: offline ? "failed" : "refused", error: error.code, detail: error.message };
    const span = document.createElement("span");
    span.className = "reason";
    span.textContent = offline ? `Not sent: ${error.message}` : `Refused: ${error.message}`;
    if (!offline) span.title = `${error.status} ${error.code}`;
    this.setState(offline ? "failed" : "refused", span);
  }

  archive(answer) {
    this.result = { status: "archive", ...answer };
    const wrap = document.createElement("div");
    const head = document.createElement("span");
    head.className = answer.refused ? "" : "result-ok";
    head.textContent = `Archive: ${answer.stored} stored, ${answer.duplicate} duplicate, ${answer.refused} refused`;
    const list = document.createElement("ul");
    list.className = "members";
    for (const member of answer.results) {
      const li = document.createElement("li");
      li.dataset.member = member.name;
      li.dataset.state = member.status;
      if (member.status === "stored") li.append(`${member.name}: stored as `, scanLink(member.scan, `scan ${member.scan}`));
      else if (member.status === "duplicate") li.append(`${member.name}: duplicate of `, scanLink(member.scan, `scan ${member.scan}`));
      else {
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = `${member.name}: refused: ${member.detail}`;
        li.append(reason);
      }
      list.append(li);
    }
    wrap.append(head, list);
    this.setState("archive", wrap);
  }
}

/**
 * The upload queue of one project.
 * @param {number} projectId
 * @param {{tbody: HTMLElement, table: HTMLElement, summary: HTMLElement, onSettled: () => void}} view
 *   ``onSettled`` is called after each file's answer (the page refreshes its table).
 */
export class UploadQueue {
  constructor(projectId, { tbody, table, summary, onSettled }) {
    this.projectId = projectId;
    this.tbody = tbody;
    this.table = table;
    this.summary = summary;
    this.onSettled = onSettled;
    this.items = [];
    this.waiting = [];
    this.running = 0;
  }

  /** Queue files with the batch's fields (metadata and split); files that are not NIfTI or zip are refused here. */
  add(files, fields) {
    for (const file of files) {
      const item = new UploadItem(file, { ...fields });
      this.items.push(item);
      this.tbody.append(item.tr);
      if (!NIFTI_NAME.test(file.name)) {
        item.result = { status: "refused", error: "not_nifti" };
        const span = document.createElement("span");
        span.className = "reason";
        span.textContent = "Refused: not a NIfTI file (.nii, .nii.gz) or a .zip of them; not sent.";
        item.setState("refused", span);
        continue;
      }
      this.waiting.push(item);
    }
    this.table.hidden = this.items.length === 0;
    this.showSummary();
    this.pump();
  }

  pump() {
    while (this.running < CONCURRENCY && this.waiting.length) {
      const item = this.waiting.shift();
      this.running += 1;
      this.send(item).finally(() => {
        this.running -= 1;
        this.showSummary();
        this.onSettled?.();
        this.pump();
      });
    }
  }

  async send(item) {
    item.setState("uploading", "Uploading…");
    try {
      const answer = await uploadScanFile(this.projectId, item.file, item.fields, {
        onProgress: (loaded, total) => item.progress(loaded, total),
        onSent: () => item.checking(),
      });
      if (isZip(item.file)) item.archive(answer);
      else item.stored(answer);
    } catch (error) {
      item.refused(error);
    }
  }

  /** True while a file is queued or going up. */
  get busy() {
    return this.running > 0 || this.waiting.length > 0;
  }

  showSummary() {
    const count = (state) => this.items.filter((i) => i.state === state).length;
    const parts = [
      ["stored", "stored"],
      ["duplicate", "duplicate"],
      ["refused", "refused"],
      ["failed", "not sent"],
      ["archive", "archives"],
    ]
      .map(([state, text]) => [count(state), text])
      .filter(([n]) => n > 0)
      .map(([n, text]) => `${n} ${text}`);
    const left = this.waiting.length + this.running;
    this.summary.textContent = `${this.items.length} file${this.items.length === 1 ? "" : "s"}: ${parts.join(", ") || "none done yet"}${left ? ` · ${left} to go` : ""}.`;
    this.summary.dataset.busy = String(this.busy);
  }
}
