// The annotator's worklist: their own assignments, grouped by project; in each project the
// scans a lead sent back first, then the open ones in priority order (with why: the project's
// priority note), then the submitted.
import { api } from "./api.js";
import { requireUser, runPage, showPageError, showUser } from "./session.js";

const STATUS_TEXT = { todo: "To do", in_progress: "In progress", submitted: "Submitted", returned: "Returned" };

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

/** The status cell: the badge, and for work sent back, the lead's comment saying why. */
function statusCell(item) {
  const td = cell(statusBadge(item.status));
  const comment = item.return_comment;
  if (item.status === "returned" && comment) {
    const p = document.createElement("p");
    p.className = "return-comment";
    p.textContent = `${comment.author}: ${comment.text}`;
    p.title = `Sent back ${new Date(comment.created_at).toLocaleString()}`;
    td.append(p);
  }
  return td;
}

function openLink(item) {
  const a = document.createElement("a");
  a.href = `/annotate/${item.assignment}/`;
  a.className = item.status === "submitted" ? "button secondary" : "button";
  const text = { submitted: "View", todo: "Start", returned: "Rework" };
  a.textContent = text[item.status] || "Continue";
  a.dataset.assignment = String(item.assignment);
  return a;
}

/** Why the scans of a project come in this order, in the words of whatever ordered them. */
export function orderNote(priorityNote) {
  return priorityNote
    ? `Why this order: ${priorityNote}`
    : "Why this order: nothing has ranked this project's scans yet, so they come in upload order.";
}

function group(projectId, items, project) {
  const section = document.createElement("section");
  section.className = "worklist-group";
  section.dataset.project = String(projectId);
  const head = document.createElement("div");
  head.className = "row";
  const h2 = document.createElement("h2");
  h2.textContent = items[0].project_name + (project?.is_simulated ? " (simulated)" : "");
  const open = items.filter((i) => i.status !== "submitted").length;
  const returned = items.filter((i) => i.status === "returned").length;
  const counts = document.createElement("span");
  counts.className = "muted";
  counts.textContent = `${open} open${returned ? ` (${returned} sent back to you)` : ""}, ${items.length - open} submitted`;
  head.append(h2, counts);
  const note = document.createElement("p");
  note.className = "priority-note muted small";
  note.textContent = orderNote(items[0].priority_note);
  const table = document.createElement("table");
  table.className = "worklist";
  const thead = document.createElement("thead");
  thead.innerHTML = "<tr><th>#</th><th>Subject</th><th>Status</th><th>Revisions</th><th>Priority</th><th></th></tr>";
  const body = document.createElement("tbody");
  body.append(
    ...items.map((item, index) => {
      const tr = document.createElement("tr");
      tr.dataset.assignment = String(item.assignment);
      tr.dataset.status = item.status;
      tr.append(
        cell(String(index + 1)),
        cell(item.subject_id || `scan ${item.scan}`),
        statusCell(item),
        cell(String(item.revisions)),
        cell(item.priority.toFixed(3)),
        cell(openLink(item)),
      );
      return tr;
    }),
  );
  table.append(thead, body);
  section.append(head, note, table);
  return section;
}

function render(items, projectsById) {
  const byProject = new Map();
  for (const item of items) {
    if (!byProject.has(item.project)) byProject.set(item.project, []);
    byProject.get(item.project).push(item);
  }
  // Projects with work sent back first, then with open work, then by name.
  const rank = (list) => (list.some((i) => i.status === "returned") ? 0 : list.some((i) => i.status !== "submitted") ? 1 : 2);
  const groups = [...byProject.entries()].sort(
    ([, a], [, b]) => rank(a) - rank(b) || a[0].project_name.localeCompare(b[0].project_name),
  );
  document.getElementById("worklist-body").replaceChildren(...groups.map(([id, list]) => group(id, list, projectsById.get(id))));
  const open = items.filter((i) => i.status !== "submitted").length;
  const returned = items.filter((i) => i.status === "returned").length;
  document.getElementById("worklist-summary").textContent = items.length
    ? `${open} open${returned ? ` (${returned} sent back to you for rework)` : ""}, ${items.length - open} submitted.`
    : "Nothing is assigned to you yet.";
  const next = groups.flatMap(([, list]) => list).find((i) => i.status !== "submitted");
  const nextLink = document.getElementById("open-next");
  nextLink.hidden = !next;
  if (next) nextLink.href = `/annotate/${next.assignment}/`;
}

async function main() {
  const me = await requireUser();
  showUser(me);
  const params = new URLSearchParams(window.location.search);
  const projects = await api.projects();
  const projectsById = new Map(projects.map((p) => [p.id, p]));
  if (params.get("done")) {
    const note = document.getElementById("page-note");
    const name = projectsById.get(Number(params.get("project")))?.name;
    note.textContent = name
      ? `Submitted. There is no open scan left in ${name}.`
      : "Submitted. There is no open scan left in your worklist.";
    note.hidden = false;
  }
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
  // A lead (or admin) who also rates scans lands here: their project pages are one click away.
  document.getElementById("projects-link").hidden = !(
    me.is_site_admin || projects.some((p) => p.my_role === "lead" || p.my_role === "admin")
  );
}

runPage(main);
