// Long work (consensus runs, exports) answers 202 and is polled until it is done or failed.
// This module polls one job and shows its progress in a <progress> bar and a status line.

export const FINISHED = new Set(["done", "failed"]);

/** A queued job "waits for a worker" once queued longer than this (the server's MRIANNOT_JOB_WAITING_S). */
export const WAITING_AFTER_MS = 30 * 1000;

/** A duration for people: "45 s", "3 min", "2 h 05 min". */
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 90) return `${min} min`;
  return `${Math.floor(min / 60)} h ${String(min % 60).padStart(2, "0")} min`;
}

/**
 * How long a job has been queued (ms): since the earliest of its ``created_at`` and the moment
 * this page first saw it queued; 0 when it is not queued.
 */
export function queuedForMs(job, now = Date.now(), seenQueuedAt = null) {
  if (job.status !== "queued") return 0;
  const since = [Date.parse(job.created_at), seenQueuedAt].filter((t) => Number.isFinite(t));
  return since.length ? Math.max(0, now - Math.min(...since)) : 0;
}

/** "waits for a worker (queued 2 min)" once a job has been queued past ``afterMs``, else "". */
export function waitingText(job, { now = Date.now(), seenQueuedAt = null, afterMs = WAITING_AFTER_MS } = {}) {
  const ms = queuedForMs(job, now, seenQueuedAt);
  return ms > afterMs ? `waits for a worker (queued ${duration(ms)})` : "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll ``fetchJob`` until the job's status is done or failed.
 * @param {() => Promise<{status:string, progress?:number, message?:string}>} fetchJob
 * @param {object} [options]
 * @param {(job: object) => void} [options.onUpdate] called with every answer
 * @param {number} [options.intervalMs] pause between two polls
 * @param {number} [options.timeoutMs] give up after this long (the job goes on on the server)
 * @returns {Promise<object>} the last answer (status done or failed)
 */
export async function pollJob(fetchJob, { onUpdate, intervalMs = 400, timeoutMs = 30 * 60 * 1000 } = {}) {
  const started = Date.now();
  for (;;) {
    const job = await fetchJob();
    onUpdate?.(job);
    if (FINISHED.has(job.status)) return job;
    if (Date.now() - started > timeoutMs) {
      throw new Error(`Still ${job.status} after ${Math.round(timeoutMs / 1000)} s; it goes on on the server: reload later.`);
    }
    await sleep(intervalMs);
  }
}

/**
 * A progress display: a <progress> element and a text line (both optional), with
 * ``data-status`` on the container for styles and tests.
 */
export class ProgressView {
  /**
   * @param {HTMLElement} container shown while a job is followed
   * @param {HTMLProgressElement|null} bar
   * @param {HTMLElement|null} text
   */
  constructor(container, bar, text) {
    this.container = container;
    this.bar = bar;
    this.text = text;
  }

  show(job, describe = (j) => j.message || j.status) {
    this.container.hidden = false;
    this.container.dataset.status = job.status;
    this.queuedSeenAt = job.status === "queued" ? (this.queuedSeenAt ?? Date.now()) : null;
    const waiting = waitingText(job, { seenQueuedAt: this.queuedSeenAt });
    this.container.dataset.waiting = String(Boolean(waiting));
    const fraction = job.status === "done" ? 1 : Math.max(0, Math.min(1, job.progress ?? 0));
    if (this.bar) {
      this.bar.value = fraction;
      this.bar.max = 1;
    }
    if (this.text) {
      const percent = `${Math.round(fraction * 100)} %`;
      this.text.textContent =
        job.status === "failed"
          ? `Failed: ${job.error || job.message || "no reason given"}`
          : `${percent} · ${describe(job)}${waiting ? ` · ${waiting}` : ""}`;
    }
  }

  hide() {
    this.container.hidden = true;
  }
}
