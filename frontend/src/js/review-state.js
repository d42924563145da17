// The review page's state and the few helpers its modules share (review.js loads the page
// and takes the decisions; review-overlays.js shows one overlay at a time; review-panels.js
// fills the facts, performance, agreement and runs panels).
import { $ } from "./session.js";

export const METHOD_TEXT = { staple: "STAPLE", majority_vote: "Majority vote" };
export const SOURCE_TEXT = {
  consensus: "consensus accepted automatically",
  accepted: "consensus accepted by a lead",
  edited: "edited by a lead",
};
export const STATUS_TEXT = {
  new: "new",
  in_progress: "being rated",
  submitted: "all raters submitted",
  consensus: "consensus (not ambiguous)",
  flagged: "flagged for adjudication",
  ground_truth: "ground truth set",
};

/** What the page shows and does now (also window.mriannot, for the tests). */
export const app = {
  scanId: null,
  viewer: null,
  channels: null, // the scan's sequences (channels.js)
  tools: null,
  review: null,
  flagged: [],
  project: null,
  run: null,
  overlays: [],
  overlay: null,
  overlayToken: 0,
  cache: new Map(),
  uncertainty: null,
  uncertaintyOpacity: 0.8,
  editing: null,
};

export function message(text) {
  $("message").textContent = text;
}

export function optionsText(run) {
  if (run.method !== "staple") return "";
  const o = run.options || {};
  const decision = o.overrule === "any" ? "fit decides" : "majority stands";
  return `region ${o.region}, prior ${o.prior}, ${decision}, max_iter ${o.max_iter}, tol ${o.tol}`;
}

export function runText(run) {
  const options = optionsText(run);
  return `${METHOD_TEXT[run.method] || run.method}${options ? ` (${options})` : ""}`;
}

export function labelName(value) {
  return app.review.labels.find((l) => l.value === Number(value))?.name ?? `label ${value}`;
}

/** Rater index -> annotator name, for the run shown (or the scan's submitted revisions). */
export function raterNames() {
  const names = new Map();
  for (const p of app.run?.performances ?? []) names.set(p.rater_index, p.annotator);
  if (!names.size) for (const r of app.review.raters) names.set(r.rater_index, r.annotator);
  return names;
}

