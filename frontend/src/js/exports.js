// Dataset exports of a project (/exports/<project>/), for its leads and admins: choose the format
// and options, build the zip on the server (a Celery task), follow its progress, download it.
import { ApiError, api } from "./api.js";
import { leadApi } from "./lead-api.js";
import { ProgressView, pollJob } from "./poll.js";
import { renderProjectNav } from "./project-nav.js";
import { $, idFromPath, markReady, requireUser, runPage, showPageError, showUser } from "./session.js";
import { badge, cell, fillBody, humanSize, link, row } from "./tables.js";


const FORMAT_TEXT = { nnunet: "nnU-Net v2", monai: "MONAI", bids: "BIDS derivatives", dicomseg: "DICOM-SEG" };

/** Test hook (read-only use): window.mriannot. */
const app = { project: null, lastExport: null };
window.mriannot = app;

function optionText(options) {
  const parts = [];
  if (options.include_raters) parts.push("rater labels");
  if (options.include_posterior) parts.push("posteriors");
  if (options.only_adjudicated) parts.push("adjudicated only");
  return parts.join(", ") || "ground truths only";
}

function downloadLink(item) {
  const a = link(leadApi.exportDownloadUrl(item.id), "Download zip", { className: "button small", download: true });
  a.dataset.export = String(item.id);
  return a;
}

function renderList(items) {
  const rows = items.map((e) =>
    row(
      [
        cell(String(e.id)),
        cell(new Date(e.created_at).toLocaleString()),
        cell(FORMAT_TEXT[e.format] || e.format),
        cell(optionText(e.options || {})),
        cell(badge(e.status === "running" ? `running ${Math.round((e.progress || 0) * 100)} %` : e.status, `job-${e.status}`), {
          title: e.error || e.message || "",
        }),
        cell(humanSize(e.size), { num: true }),
        cell(e.sha256 ? Object.assign(document.createElement("code"), { className: "sha", textContent: e.sha256.slice(0, 16) + "…", title: e.sha256 }) : ""),
        cell(e.status === "done" ? downloadLink(e) : e.status === "failed" ? e.error || "failed" : ""),
      ],
      { export: e.id, status: e.status },
    ),
  );
  fillBody($("exports-body"), rows, { empty: "No export yet.", columns: 8 });
}

async function refreshList(projectId) {
  renderList(await leadApi.exports(projectId));
}

async function follow(projectId, exportId) {
  const view = new ProgressView($("export-progress"), $("export-bar"), $("export-text"));
  const result = $("export-result");
  result.hidden = true;
  $("export-start").disabled = true;
  try {
    const job = await pollJob(() => leadApi.export(exportId), {
      onUpdate: (job) => view.show(job, (j) => `export ${exportId}: ${j.message || j.status}`),
    });
    app.lastExport = job;
    result.hidden = false;
    if (job.status === "done") {
      result.className = "result-ok";
      result.replaceChildren(`Export ${exportId} is ready (${humanSize(job.size)}, checked). `, downloadLink(job));
    } else {
      result.className = "result-bad";
      result.textContent = `Export ${exportId} failed: ${job.error || job.message || "no reason given"}`;
    }
  } finally {
    $("export-start").disabled = false;
    await refreshList(projectId);
  }
}

function wireForm(projectId) {
  $("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const options = {
      format: document.querySelector("input[name=format]:checked").value,
      include_raters: $("include-raters").checked,
      include_posterior: $("include-posterior").checked,
      only_adjudicated: $("only-adjudicated").checked,
    };
    $("export-start").disabled = true;
    try {
      const queued = await leadApi.requestExport(projectId, options);
      await refreshList(projectId);
      await follow(projectId, queued.id);
    } catch (error) {
      $("export-start").disabled = false;
      showPageError(`The export could not be started: ${error.message}`);
    }
  });
}

async function main() {
  const me = await requireUser();
  showUser(me);
  const projectId = idFromPath("exports");
  if (projectId === null) throw new Error("This address names no project: open the exports from a project's dashboard.");
  const forbidden = (text) => {
    $("forbidden-text").textContent = text;
    $("forbidden").hidden = false;
    markReady("forbidden");
  };
  let project;
  let items;
  try {
    project = await api.project(projectId);
    items = await leadApi.exports(projectId);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
      forbidden(
        project
          ? `You are ${project.my_role ? `an ${project.my_role}` : "not a lead"} in “${project.name}”: only its leads and admins export its ground truths.`
          : `Project ${projectId} does not exist, or you are not a member of it.`,
      );
      return;
    }
    throw error;
  }
  app.project = project;
  document.title = `Exports · ${project.name} · mriannot`;
  $("project-title").textContent = `Export ground truths · ${project.name}`;
  $("dashboard-link").href = `/dashboard/${projectId}/`;
  renderProjectNav(projectId, "exports", { projectName: project.name });
  $("simulated-notice").hidden = !project.is_simulated;
  renderList(items);
  $("exports").hidden = false;
  wireForm(projectId);
  markReady();
  const unfinished = items.find((e) => e.status === "queued" || e.status === "running");
  if (unfinished) await follow(projectId, unfinished.id);
}

runPage(main);
