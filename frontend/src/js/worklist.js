// The annotator's worklist: their own assignments, open ones first, in priority order.
import { api } from "./api.js";
import { requireUser, runPage, showPageError, showUser } from "./session.js";

const STATUS_TEXT = { todo: "To do", in_progress: "In progress", submitted: "Submitted" };

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  return td;
}

function statusBadge(status) {
  const span = document.createElement("span");
  span.className = `badge status-${status}`;
  span.textContent = STATUS_TEXT[status] || status;
  return span;
}

function openLink(item) {
  const a = document.createElement("a");
  a.href = `/annotate/${item.assignment}/`;
  a.className = item.status === "submitted" ? "button secondary" : "button";
  a.textContent = item.status === "submitted" ? "View" : item.status === "todo" ? "Start" : "Continue";
  a.dataset.assignment = String(item.assignment);
  return a;
}

function render(items, projectsById) {
  const body = document.getElementById("worklist-body");
  const rows = items.map((item, index) => {
    const tr = document.createElement("tr");
    tr.dataset.assignment = String(item.assignment);
    tr.dataset.status = item.status;
    tr.append(
      cell(String(index + 1)),
      cell(item.subject_id || `scan ${item.scan}`),
      cell(item.project_name + (projectsById.get(item.project)?.is_simulated ? " (simulated)" : "")),
      cell(statusBadge(item.status)),
      cell(String(item.revisions)),
      cell(item.priority.toFixed(3)),
      cell(openLink(item)),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  const open = items.filter((i) => i.status !== "submitted").length;
  document.getElementById("worklist-summary").textContent = items.length
    ? `${open} open, ${items.length - open} submitted.`
    : "Nothing is assigned to you yet.";
  const next = items.find((i) => i.status !== "submitted");
  const nextLink = document.getElementById("open-next");
  nextLink.hidden = !next;
  if (next) nextLink.href = `/annotate/${next.assignment}/`;
}

async function main() {
  const me = await requireUser();
  showUser(me);
  const params = new URLSearchParams(window.location.search);
  if (params.get("done")) {
    const note = document.getElementById("page-note");
    note.textContent = "Submitted. There is no open scan left in your worklist.";
    note.hidden = false;
  }
  const projects = await api.projects();
  const projectsById = new Map(projects.map((p) => [p.id, p]));
  const simulated = projects.filter((p) => p.is_simulated);
  const notice = document.getElementById("simulated-notice");
  notice.hidden = simulated.length === 0;
  document.getElementById("simulated-names").textContent = simulated.map((p) => p.name).join(", ");

  const select = document.getElementById("project-filter");
  for (const project of projects) {
    const option = document.createElement("option");
    option.value = String(project.id);
    option.textContent = project.name;
    select.append(option);
  }
  select.value = params.get("project") || "";
  const load = async () => render(await api.worklist(select.value || null), projectsById);
  select.addEventListener("change", () => {
    const url = new URL(window.location.href);
    if (select.value) url.searchParams.set("project", select.value);
    else url.searchParams.delete("project");
    window.history.replaceState(null, "", url);
    load().catch((error) => showPageError(error.message));
  });
  await load();
  document.getElementById("admin-link").hidden = !me.is_site_admin;
  // Leads and admins of a project see its agreement dashboard, review and exports.
  document.getElementById("dashboard-link").hidden = !projects.some((p) => p.my_role === "lead" || p.my_role === "admin");
}

runPage(main);
