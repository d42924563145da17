// The health of the job queues (GET /api/v1/queues/), on the dashboard's "Background work" card.
//
// States, per queue: served (a worker consumes it, nothing waits long); busy (a worker consumes
// it, a job has waited longer than the server's waiting_after_s); no worker (nobody consumes
// it: its jobs wait forever); unknown (the broker cannot be reached: jobs stay queued and are
// sent when it is back). The pure functions are tested under node (frontend/tests/queues.test.js).
import { request } from "./api.js";
import { duration } from "./poll.js";
import { cell, fillBody, row } from "./tables.js";

export const queuesApi = {
  health: () => request("queues/"),
};

/** What a person should know about the queues: one sentence per problem, most serious first. */
export function queueProblems(health) {
  const problems = [];
  if (health.broker !== "ok") {
    problems.push(
      "The broker (Redis) cannot be reached: new jobs are kept queued and are sent when it is back. " +
        "Check that Redis runs (REDIS_URL).",
    );
  }
  for (const q of health.queues) {
    const waits = q.waiting ? `${q.waiting} job${q.waiting === 1 ? "" : "s"} waiting (the oldest for ${duration(q.oldest_waiting_s * 1000)})` : "";
    if (q.no_worker) {
      const since = q.worker_last_seen_at ? ` since ${new Date(q.worker_last_seen_at).toLocaleString()}` : "";
      problems.push(
        `No worker consumes the “${q.name}” queue${since}: ${waits || "its jobs would wait"}. ` +
          `Start one: celery -A mriannot worker (every queue) or -Q ${q.name}.`,
      );
    } else if (q.workers && q.waiting && q.oldest_waiting_s > health.waiting_after_s) {
      problems.push(`The “${q.name}” queue is busy: ${waits} for a free worker.`);
    }
  }
  return problems;
}

/** The state of one queue, as the card's badge says it. */
export function queueState(q, health) {
  if (q.workers === null || q.workers === undefined) return "unknown";
  if (q.no_worker) return "no worker";
  return q.waiting && q.oldest_waiting_s > health.waiting_after_s ? "busy" : "served";
}

const STATE_KIND = { served: "ok", busy: "warn", "no worker": "bad", unknown: "warn" };

function render(health) {
  const problems = queueProblems(health);
  const alert = document.getElementById("queue-alert");
  alert.hidden = problems.length === 0;
  alert.replaceChildren(
    ...problems.map((text) => Object.assign(document.createElement("li"), { textContent: text })),
  );
  document.getElementById("queue-ok").hidden = problems.length > 0;
  const rows = health.queues.map((q) => {
    const state = queueState(q, health);
    const badge = Object.assign(document.createElement("span"), { className: `badge ${STATE_KIND[state]}`, textContent: state });
    return row(
      [
        cell(q.name),
        cell(badge),
        cell(q.workers === null ? "unknown" : q.workers.join(", ") || "none"),
        cell(String(q.waiting), { num: true }),
        cell(q.oldest_waiting_s === null ? "–" : duration(q.oldest_waiting_s * 1000), { num: true }),
      ],
      { queue: q.name, state },
    );
  });
  fillBody(document.getElementById("queues-body"), rows, { empty: "No queue.", columns: 5 });
  document.getElementById("queue-card").dataset.problems = String(problems.length);
}

/**
 * Fill the card, then refresh it every ``everyMs`` while the page is open. A failed refresh
 * says so on the card and tries again at the next one.
 */
export async function showQueues({ everyMs = 20000 } = {}) {
  const card = document.getElementById("queue-card");
  const refresh = async () => {
    try {
      render(await queuesApi.health());
      document.getElementById("queue-error").hidden = true;
    } catch (error) {
      const line = document.getElementById("queue-error");
      line.hidden = false;
      line.textContent = `The queue health could not be read: ${error.message}`;
    }
  };
  await refresh();
  card.hidden = false;
  setInterval(refresh, everyMs);
}
