// The projects page (/projects/): the user's projects with their role and progress, and for
// site admins and project leads a "New project" form. A new project opens on its settings page
// (label schema, thresholds, pre-label policy); its creator is its lead.
import { ApiError, api } from "./api.js";
import { consoleApi } from "./console-api.js";
import { MANAGER_ROLES, showWorklistLink } from "./console-page.js";
import { $, markReady, requireUser, runPage, showUser } from "./session.js";
import { badge, cell, fillBody, link, pct, row } from "./tables.js";

/** Test hook (read-only use): window.mriannot. */
const app = { projects: [] };
window.mriannot = app;

const ROLE_TEXT = { lead: "Lead", admin: "Admin", annotator: "Annotator" };

function progressCell(progress) {
  if (!progress) return cell("–");
  const bar = document.createElement("progress");
  bar.className = "inline-progress";
  bar.max = 1;
  bar.value = progress.fraction;
  const text = document.createElement("span");
  text.className = "muted small";
  text.textContent = ` ${progress.done} of ${progress.scans} ${progress.of} (${pct(progress.fraction, 0)})`;
  const td = cell(bar);
  td.append(text);
  return td;
}

function projectRow(project) {
  const manages = MANAGER_ROLES.has(project.my_role);
  const name = manages ? link(`/projects/${project.id}/`, project.name) : link(`/?project=${project.id}`, project.name);
  const nameCell = cell(name);
  if (project.is_simulated) nameCell.append(" ", badge("simulated", "warn"));
  const actions = document.createElement("span");
  actions.className = "row";
  if (manages) {
    actions.append(link(`/projects/${project.id}/people/`, "People"), link(`/projects/${project.id}/settings/`, "Settings"));
  } else {
    actions.append(link(`/?project=${project.id}`, "My scans"));
  }
  return row(
    [nameCell, cell(ROLE_TEXT[project.my_role] || project.my_role || "–"), cell(project.progress?.scans ?? "–", { num: true }), progressCell(project.progress), cell(actions)],
    { project: project.id, role: project.my_role || "" },
  );
}

function render(projects) {
  app.projects = projects;
  fillBody($("projects-body"), projects.map(projectRow), { empty: "You are not a member of any project yet.", columns: 5 });
  const managed = projects.filter((p) => MANAGER_ROLES.has(p.my_role)).length;
  $("projects-summary").textContent = projects.length
    ? `${projects.length} project${projects.length === 1 ? "" : "s"}, ${managed} of which you lead or administer.`
    : "No project yet.";
}

function wireCreate() {
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("create-error").textContent = "";
    $("create-button").disabled = true;
    try {
      const project = await consoleApi.createProject({
        name: $("new-name").value.trim(),
        description: $("new-description").value,
        raters_per_scan: Number($("new-raters").value),
      });
      window.location.assign(`/projects/${project.id}/settings/?created=1`);
    } catch (error) {
      $("create-error").textContent = error instanceof ApiError ? error.message : String(error.message);
      $("create-button").disabled = false;
    }
  });
}

async function main() {
  const me = await requireUser();
  showUser(me);
  showWorklistLink(me);
  $("admin-link").hidden = !me.is_site_admin;
  $("worklist-note").hidden = !me.memberships.some((m) => m.role === "annotator");
  render(await api.projects());
  // Who creates projects: site admins and anyone who already leads or administers one.
  const canCreate = me.is_site_admin || me.memberships.some((m) => MANAGER_ROLES.has(m.role));
  $("create-card").hidden = !canCreate;
  $("create-note").hidden = canCreate;
  if (canCreate) wireCreate();
  markReady();
}

runPage(main);
