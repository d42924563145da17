// A project's home page (/projects/<id>/), for its leads and admins: where the project stands
// (scans by stage, a progress bar to every scan having a ground truth), the flagged scans with
// the reasons their consensus needs a lead, the latest model, and the links to run the project.
import { consoleApi } from "./console-api.js";
import { loadManagedProject } from "./console-page.js";
import { leadApi } from "./lead-api.js";
import { meanDice } from "./models-panel.js";
import { $, markReady, runPage } from "./session.js";
import { cell, fillBody, fmt, link, pct, row } from "./tables.js";

/** Test hook (read-only use): window.mriannot. */
const app = { project: null, summary: null, flagged: [], models: [] };
window.mriannot = app;

function renderCounts(summary) {
  $("count-scans").textContent = String(summary.scans);
  $("count-labelled").textContent = String(summary.labelled);
  $("count-submitted").textContent = String(summary.submitted);
  $("count-flagged").textContent = String(summary.flagged);
  $("count-ground-truth").textContent = String(summary.ground_truth);
  $("progress-bar").value = summary.progress;
  $("progress-text").textContent = summary.scans
    ? `${summary.ground_truth} of ${summary.scans} scans have a ground truth (${pct(summary.progress, 0)}).`
    : "No scans yet: upload them on the Scans page.";
  const a = summary.assignments;
  const m = summary.members;
  $("assignment-text").textContent =
    `${a.submitted} of ${a.total} assignments submitted, ${a.open} open · ` +
    `${m.annotator} annotator${m.annotator === 1 ? "" : "s"}, ${m.lead + m.admin} lead${m.lead + m.admin === 1 ? "" : "s"} or admin${m.lead + m.admin === 1 ? "" : "s"}.`;
}

function reasonList(reasons) {
  if (!reasons.length) return document.createTextNode("–");
  const ul = document.createElement("ul");
  ul.className = "flag-reasons";
  for (const reason of reasons) {
    const li = document.createElement("li");
    li.textContent = reason.message;
    li.dataset.code = reason.code;
    ul.append(li);
  }
  return ul;
}

function renderFlagged(projectId, flagged) {
  const rows = flagged.map((scan) => {
    const actions = document.createElement("span");
    actions.className = "row";
    actions.append(
      link(`/review/${scan.id}/`, "Review", { className: "button small" }),
      link(`/projects/${projectId}/people/?scan=${scan.id}#extra-title`, "Add a rater"),
    );
    const reasons = document.createElement("div");
    reasons.className = "flag-reasons";
    reasons.append(reasonList(scan.flag_reasons || []));
    return row(
      [cell(scan.subject_id || `scan ${scan.id}`), cell(fmt(scan.ambiguity, 4), { num: true }), cell(reasons), cell(actions)],
      { scan: scan.id },
    );
  });
  fillBody($("flagged-body"), rows, { empty: "No scan waits for a lead.", columns: 4 });
  const first = flagged[0];
  $("review-first").hidden = !first;
  if (first) $("review-first").href = `/review/${first.id}/`;
}

function renderModel(models) {
  const done = models.filter((m) => m.status === "done").sort((a, b) => b.version - a.version);
  const latest = done[0];
  const busy = models.find((m) => m.status === "queued" || m.status === "running");
  const parts = [];
  if (latest) {
    parts.push(
      `Model version ${latest.version}, trained on ${latest.ground_truth_ids.length} ground truth${latest.ground_truth_ids.length === 1 ? "" : "s"}` +
        `, validation Dice ${fmt(meanDice(latest.validation_dice))}` +
        (latest.finished_at ? `, finished ${new Date(latest.finished_at).toLocaleString()}` : "") +
        ".",
    );
  } else {
    parts.push("No model yet: one trains once the training split has enough ground truths.");
  }
  if (busy) parts.push(`Version ${busy.version} is ${busy.status}.`);
  $("model-text").textContent = parts.join(" ");
  $("model-text").dataset.version = latest ? String(latest.version) : "";
}

function renderLinks(project, flagged) {
  const id = project.id;
  const items = [
    [`/projects/${id}/scans/`, "Scans", "upload scans, set splits and scan metadata"],
    [`/projects/${id}/people/`, "People", "members, roles, assignments, one more rater for a scan"],
    [`/projects/${id}/settings/`, "Settings", "label schema, raters per scan, flag rules, active learning, pre-labels"],
    [`/dashboard/${id}/`, "Agreement dashboard", "inter-rater agreement, rater drift, models"],
    [`/exports/${id}/`, "Exports", "nnU-Net, MONAI or BIDS datasets of the ground truths"],
  ];
  if (flagged.length) items.unshift([`/review/${flagged[0].id}/`, "Review", "adjudicate the flagged scans, most ambiguous first"]);
  $("home-links").replaceChildren(
    ...items.map(([href, text, what]) => {
      const li = document.createElement("li");
      li.append(link(href, text), ` · ${what}`);
      return li;
    }),
  );
}

async function main() {
  const loaded = await loadManagedProject("home", "Project home pages");
  if (!loaded) return;
  const { project } = loaded;
  app.project = project;
  $("project-title").textContent = project.name;
  $("project-description").textContent = project.description || "";
  $("simulated-notice").hidden = !project.is_simulated;
  const [summary, flagged, models] = await Promise.all([
    consoleApi.summary(project.id),
    leadApi.flaggedScans(project.id),
    leadApi.models(project.id).catch(() => []),
  ]);
  Object.assign(app, { summary, flagged, models });
  renderCounts(summary);
  renderFlagged(project.id, flagged);
  renderModel(models);
  renderLinks(project, flagged);
  $("home").hidden = false;
  markReady();
}

runPage(main);
