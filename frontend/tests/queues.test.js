// Unit tests of what the pages say about waiting jobs: "waits for a worker" on a job's progress
// line (poll.js) and the dashboard's queue health (queues.js) (node --test frontend/tests/).
import assert from "node:assert/strict";
import { test } from "node:test";

import { duration, queuedForMs, waitingText } from "../src/js/poll.js";
import { queueProblems, queueState } from "../src/js/queues.js";

const NOW = Date.parse("2026-12-01T12:00:00Z");
const ago = (s) => new Date(NOW - s * 1000).toISOString();

test("durations read as people say them", () => {
  assert.equal(duration(45_000), "45 s");
  assert.equal(duration(3 * 60_000), "3 min");
  assert.equal(duration((2 * 60 + 5) * 60_000), "2 h 05 min");
});

test("a job queued longer than 30 s waits for a worker; a running or fresh one does not", () => {
  assert.equal(waitingText({ status: "queued", created_at: ago(29) }, { now: NOW }), "");
  assert.equal(waitingText({ status: "queued", created_at: ago(31) }, { now: NOW }), "waits for a worker (queued 31 s)");
  assert.equal(waitingText({ status: "running", created_at: ago(3600) }, { now: NOW }), "");
  // Without created_at (the 202 answer), the time since the page first saw it queued counts.
  assert.equal(queuedForMs({ status: "queued" }, NOW, NOW - 40_000), 40_000);
  assert.equal(queuedForMs({ status: "queued" }, NOW, null), 0);
});

const QUEUES = ["default", "consensus", "training", "export"];

function health(overrides = {}, broker = "ok") {
  return {
    broker,
    waiting_after_s: 30,
    queues: QUEUES.map((name) => ({
      name,
      workers: broker === "ok" ? ["w1@box"] : null,
      no_worker: false,
      waiting: 0,
      oldest_waiting_s: null,
      worker_last_seen_at: null,
      ...(overrides[name] || {}),
    })),
  };
}

test("every queue served: nothing to say", () => {
  const h = health();
  assert.deepEqual(queueProblems(h), []);
  assert.deepEqual(h.queues.map((q) => queueState(q, h)), ["served", "served", "served", "served"]);
});

test("a queue without a worker is named, with its waiting jobs and the command that fixes it", () => {
  const h = health({ training: { workers: [], no_worker: true, waiting: 2, oldest_waiting_s: 125 } });
  const problems = queueProblems(h);
  assert.equal(problems.length, 1);
  assert.match(problems[0], /No worker consumes the “training” queue: 2 jobs waiting \(the oldest for 2 min\)/);
  assert.match(problems[0], /celery -A mriannot worker/);
  assert.equal(queueState(h.queues[2], h), "no worker");
});

test("a served queue whose oldest job waits past the threshold is busy", () => {
  const h = health({ consensus: { waiting: 1, oldest_waiting_s: 31 } });
  assert.deepEqual(queueProblems(h), ["The “consensus” queue is busy: 1 job waiting (the oldest for 31 s) for a free worker."]);
  assert.equal(queueState(h.queues[1], h), "busy");
});

test("a broker that cannot be reached is said first, and the queues are unknown", () => {
  const h = health({}, "unreachable");
  const problems = queueProblems(h);
  assert.equal(problems.length, 1);
  assert.match(problems[0], /^The broker \(Redis\) cannot be reached/);
  assert.deepEqual(h.queues.map((q) => queueState(q, h)), ["unknown", "unknown", "unknown", "unknown"]);
});
