// Long work (consensus runs, exports) answers 202 and is polled until it is done or failed.
// This module polls one job and shows its progress in a <progress> bar and a status line.

export const FINISHED = new Set(["done", "failed"]);

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
    const fraction = job.status === "done" ? 1 : Math.max(0, Math.min(1, job.progress ?? 0));
    if (this.bar) {
      this.bar.value = fraction;
      this.bar.max = 1;
    }
    if (this.text) {
      const percent = `${Math.round(fraction * 100)} %`;
      this.text.textContent = job.status === "failed" ? `Failed: ${job.error || job.message || "no reason given"}` : `${percent} · ${describe(job)}`;
    }
  }

  hide() {
    this.container.hidden = true;
  }
}
