// The dashboard's active-learning card: how the worklists are ordered now, every model
// version (status, training and validation ground truths, validation Dice per label), and a
// button that asks for a new model and follows its training and scoring to the end.
import { leadApi } from "./lead-api.js";
import { renderBreakdown } from "./metadata-breakdown.js";
import { FINISHED, ProgressView, pollJob } from "./poll.js";
import { badge, cell, fillBody, fmt, row } from "./tables.js";

const $ = (id) => document.getElementById(id);

const STATUS_KIND = { done: "ok", failed: "bad", running: "warn", queued: "" };

/** Mean of the validation Dice values that are numbers (null when there are none). */
export function meanDice(perLabel) {
  const values = Object.values(perLabel || {}).filter((v) => typeof v === "number" && Number.isFinite(v));
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

let labelNames = {}; // label value -> name, from the project
let labels = []; // the project's labels, in order

function diceText(perLabel) {
  const entries = Object.entries(perLabel || {});
  if (!entries.length) return "no validation ground truth";
  return entries.map(([value, dice]) => `${labelNames[value] ?? value}: ${fmt(dice)}`).join(" · ");
}

/** A trained version's model card (Markdown: ground truths, recipe, validation, calibration, limits). */
function cardLink(v) {
  if (v.status !== "done") return "–";
  const link = document.createElement("a");
  link.href = `/api/v1/models/${v.id}/card.md`;
  link.textContent = "model card";
  link.target = "_blank";
  link.rel = "noopener";
  link.className = "model-card-link";
  return link;
}

function renderVersions(versions) {
  const rows = [...versions]
    .sort((a, b) => b.version - a.version)
    .map((v) =>
      row(
        [
          cell(`v${v.version}`),
          cell(badge(v.status, STATUS_KIND[v.status] ?? "")),
          cell(v.trigger),
          cell(v.ground_truth_ids.length, { num: true }),
          cell(v.validation_ground_truth_ids.length, { num: true }),
          cell(fmt(meanDice(v.validation_dice)), { num: true, title: diceText(v.validation_dice) }),
          cell(v.status === "failed" ? v.error || v.message : diceText(v.validation_dice), { className: "small" }),
          cell(v.finished_at ? new Date(v.finished_at).toLocaleString() : "–"),
          cell(cardLink(v)),
        ],
        { version: v.version, status: v.status },
      ),
    );
  fillBody($("models-body"), rows, { empty: "No model yet: the worklists are in cold-start order.", columns: 9 });
}

/** The newest trained version's validation Dice by scan metadata (from its detail). */
async function renderModelBreakdown(versions) {
  const newest = versions.filter((v) => v.status === "done").sort((a, b) => b.version - a.version)[0];
  $("model-breakdown-box").hidden = !newest;
  if (!newest) return;
  const detail = await leadApi.model(newest.id);
  $("model-breakdown-title").textContent = `Validation Dice of model v${newest.version} by scan metadata`;
  renderBreakdown($("model-breakdown"), detail.validation_by_metadata, labels, {
    empty: "This version kept no per-scan validation results (no validation scan, or trained before they were kept).",
  });
}

async function refresh(projectId) {
  const [versions, ranking] = await Promise.all([leadApi.models(projectId), leadApi.ranking(projectId)]);
  renderVersions(versions);
  await renderModelBreakdown(versions);
  $("al-note").textContent = ranking.note;
  $("al-open").textContent = `${ranking.scans.length} open scan${ranking.scans.length === 1 ? "" : "s"} ranked.`;
  return versions;
}

/** A version as a job: training ends with status "done", then scoring the open scans sets scored_at. */
function asJob(v) {
  return v.status === "done" && !v.scored_at ? { ...v, status: "running", message: v.message || "scoring the open scans" } : v;
}

async function follow(projectId, versionId) {
  const view = new ProgressView($("train-progress"), $("train-bar"), $("train-text"));
  $("train-model").disabled = true;
  try {
    const job = await pollJob(async () => asJob(await leadApi.model(versionId)), { onUpdate: (v) => view.show(v, (j) => `model v${j.version}: ${j.message || j.status}`) });
    view.show(job, (j) => (j.status === "done" ? `model v${j.version} trained, open scans re-ranked` : j.message));
  } finally {
    $("train-model").disabled = false;
    await refresh(projectId);
  }
}

/**
 * Fill the card and wire its button; resumes following a model still queued or training.
 * @param {{id:number, labels:{value:number, name:string}[]}} project
 */
export async function showModels(project) {
  const projectId = project.id;
  labelNames = Object.fromEntries(project.labels.map((l) => [String(l.value), l.name]));
  labels = project.labels;
  const versions = await refresh(projectId);
  $("al-card").hidden = false;
  $("train-model").addEventListener("click", async () => {
    $("train-model").disabled = true;
    $("train-error").hidden = true;
    let queued;
    try {
      queued = await leadApi.requestModel(projectId);
    } catch (error) {
      $("train-model").disabled = false;
      $("train-error").hidden = false;
      $("train-error").textContent = `No model was queued: ${error.message}`;
      return;
    }
    await refresh(projectId);
    await follow(projectId, queued.id);
  });
  const newest = versions.reduce((a, b) => (a && a.version > b.version ? a : b), null);
  if (newest && !FINISHED.has(asJob(newest).status)) follow(projectId, newest.id).catch((error) => console.error(error));
}
