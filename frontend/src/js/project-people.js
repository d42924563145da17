// A project's People page (/projects/<id>/people/), for its leads and admins: members and their
// roles (add an existing account by username, change a role, remove a member), for site admins
// a form that creates an account, and the assignments: per rater what is open, in progress and
// submitted, how long a scan takes them and how many they submit a day (computed by the server);
// reassigning an open assignment (the first page of them); one more rater for a scan (e.g. a third
// when two disagree: the flagged scans are offered first).
import { ApiError } from "./api.js";
import { consoleApi } from "./console-api.js";
import { loadManagedProject } from "./console-page.js";
import { $, markReady, runPage } from "./session.js";
import { badge, cell, fillBody, fmt, row } from "./tables.js";

/** Test hook (read-only use): window.mriannot. */
const app = { project: null, me: null, members: [], stats: [], open: [], openTotal: 0, scans: [] };
window.mriannot = app;

const ROLES = [
  ["annotator", "Annotator"],
  ["lead", "Lead"],
  ["admin", "Admin"],
];
const STATUS_TEXT = { todo: "To do", in_progress: "In progress", submitted: "Submitted", returned: "Returned for rework" };
const SCAN_STATUS_TEXT = {
  new: "new",
  in_progress: "being labelled",
  submitted: "all submitted",
  consensus: "consensus",
  flagged: "flagged",
  ground_truth: "ground truth",
};

function errorText(error) {
  return error instanceof ApiError ? error.message : `${error.message}`;
}

/** Say what just happened (or went wrong) in the page's result banner. */
function say(text, { error = false } = {}) {
  const box = $("people-result");
  box.textContent = text;
  box.classList.toggle("error", error);
  box.classList.toggle("note", !error);
  box.hidden = false;
}

function selectOf(pairs, value) {
  const select = document.createElement("select");
  select.replaceChildren(
    ...pairs.map(([v, text]) => Object.assign(document.createElement("option"), { value: v, textContent: text })),
  );
  if (value !== undefined) select.value = value;
  return select;
}

function button(text, { className = "small" } = {}) {
  return Object.assign(document.createElement("button"), { type: "button", textContent: text, className });
}

async function act(work, success) {
  try {
    const result = await work();
    await refresh();
    say(typeof success === "function" ? success(result) : success);
  } catch (error) {
    say(errorText(error), { error: true });
  }
}

/** Seconds as people read a duration: "45 s", "12 min", "1.5 h". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// --- members -----------------------------------------------------------------------------------

function memberRow(member) {
  const role = selectOf(ROLES, member.role);
  role.setAttribute("aria-label", `Role of ${member.username}`);
  const save = button("Change role");
  save.addEventListener("click", () =>
    act(
      () => consoleApi.setRole(app.project.id, member.id, role.value),
      `${member.username} is now ${role.value === "admin" ? "an admin" : `a ${role.value}`}.`,
    ),
  );
  const remove = button("Remove", { className: "small secondary" });
  remove.addEventListener("click", () => {
    if (!window.confirm(`Remove ${member.username} from the project? Their submitted work stays.`)) return;
    act(
      () => consoleApi.removeMember(app.project.id, member.id),
      (result) => {
        const moved = result.reassigned.map((r) => `scan of assignment ${r.assignment} to ${r.annotator}`);
        const parts = [`Removed ${member.username}.`];
        if (moved.length) parts.push(`Their open work went to others: ${moved.join(", ")}.`);
        if (result.deleted.length) parts.push(`${result.deleted.length} untouched assignment(s) had no one to take them and were dropped.`);
        return parts.join(" ");
      },
    );
  });
  const actions = document.createElement("span");
  actions.className = "row";
  actions.append(role, save, remove);
  const who = cell(member.username);
  if (member.user_id === app.me.id) who.append(" ", badge("you"));
  return row([who, cell(badge(member.role)), cell(actions)], { member: member.id, username: member.username, role: member.role });
}

function wireMemberForm() {
  $("member-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = $("member-username").value.trim();
    const role = $("member-role").value;
    act(async () => {
      await consoleApi.addMember(app.project.id, username, role);
      $("member-username").value = "";
    }, `Added ${username} as ${role}.`);
  });
}

function wireUserForm() {
  $("user-card").hidden = !app.me.is_site_admin;
  if (!app.me.is_site_admin) return;
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = $("user-username").value.trim();
    const addToo = $("user-add-too").checked;
    act(
      async () => {
        await consoleApi.createUser(username, $("user-password").value, $("user-email").value.trim());
        $("user-password").value = "";
        $("user-username").value = "";
        if (addToo) await consoleApi.addMember(app.project.id, username, "annotator");
      },
      `Created the account ${username}${addToo ? " and added it as annotator" : ""}.`,
    );
  });
}

// --- assignments -------------------------------------------------------------------------------

function annotators() {
  return app.members.filter((m) => m.role === "annotator").map((m) => m.username);
}

function renderStats() {
  const rows = app.stats.map((r) =>
    row(
      [
        cell(r.username),
        cell(r.role || "former member", { className: r.role ? "" : "muted" }),
        cell(r.todo, { num: true }),
        cell(r.in_progress, { num: true }),
        cell(r.submitted, { num: true }),
        cell(duration(r.median_seconds_per_scan), { num: true }),
        cell(fmt(r.scans_per_day, 1), { num: true }),
      ],
      { rater: r.username },
    ),
  );
  fillBody($("raters-body"), rows, { empty: "No rater yet: add annotators above.", columns: 7 });
}

function renderOpen() {
  const rows = app.open.map((a) => {
    const raters = new Set(a.scan_raters || [a.annotator]);
    const choices = annotators().filter((name) => !raters.has(name));
    const scanName = a.scan_subject_id || `scan ${a.scan}`;
    const form = document.createElement("span");
    form.className = "row";
    if (choices.length) {
      const select = selectOf(choices.map((name) => [name, name]));
      select.setAttribute("aria-label", `New rater of assignment ${a.id}`);
      const go = button("Reassign");
      go.addEventListener("click", () => act(() => consoleApi.reassign(a.id, select.value), `Scan ${scanName} now goes to ${select.value}.`));
      form.append(select, go);
    } else {
      form.append(Object.assign(document.createElement("span"), { className: "muted small", textContent: "no other annotator free" }));
    }
    return row([cell(scanName), cell(a.annotator), cell(badge(STATUS_TEXT[a.status] || a.status, `status-${a.status}`)), cell(form)], {
      assignment: a.id,
      annotator: a.annotator,
    });
  });
  if (app.openTotal > app.open.length) {
    // A large project: the first page only (worklist order); the rest are on later pages of the API.
    const more = cell(`${app.open.length} of ${app.openTotal} open assignments shown (highest priority first).`, { className: "muted small" });
    more.colSpan = 4;
    rows.push(row([more], { more: app.openTotal - app.open.length }));
  }
  fillBody($("open-body"), rows, { empty: "No open assignment.", columns: 4 });
}

/** The scans the extra-rater form offers: the flagged first, then the project's first page, and the one a link named. */
async function extraScans(id, linked) {
  const [flagged, first] = await Promise.all([consoleApi.scans(id, { status: "flagged" }), consoleApi.scans(id)]);
  const scans = new Map();
  for (const s of [...flagged.items, ...first.items]) if (!scans.has(s.id)) scans.set(s.id, s);
  if (linked && !scans.has(linked)) {
    try {
      const [scan, raters] = await Promise.all([consoleApi.scan(linked), consoleApi.raterCount(linked)]);
      if (scan.project === id) scans.set(scan.id, { ...scan, raters_assigned: raters });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error; // a scan that is gone or not this project's: not offered
    }
  }
  return [...scans.values()];
}

function renderExtraForm() {
  const scanSelect = $("extra-scan");
  const previous = scanSelect.value || new URLSearchParams(window.location.search).get("scan") || "";
  // Flagged scans first: they are the ones that usually want another rater.
  const scans = [...app.scans].sort((a, b) => (b.status === "flagged") - (a.status === "flagged") || a.id - b.id);
  scanSelect.replaceChildren(
    ...scans.map((s) =>
      Object.assign(document.createElement("option"), {
        value: String(s.id),
        textContent: `${s.subject_id || `scan ${s.id}`} · ${SCAN_STATUS_TEXT[s.status] || s.status} · ${s.raters_assigned ?? 0} rater(s)`,
      }),
    ),
  );
  if (previous && scans.some((s) => String(s.id) === previous)) scanSelect.value = previous;
  const annotatorSelect = $("extra-annotator");
  const chosen = annotatorSelect.value;
  annotatorSelect.replaceChildren(
    ...[["", "least-loaded annotator"], ...annotators().map((name) => [name, name])].map(([v, text]) =>
      Object.assign(document.createElement("option"), { value: v, textContent: text }),
    ),
  );
  annotatorSelect.value = annotators().includes(chosen) ? chosen : "";
  $("extra-add").disabled = !scans.length;
}

function wireExtraForm() {
  $("extra-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const scanId = Number($("extra-scan").value);
    const scan = app.scans.find((s) => s.id === scanId);
    act(
      () => consoleApi.addRater(scanId, $("extra-annotator").value),
      (assignment) =>
        `${assignment.annotator} now rates ${scan?.subject_id || `scan ${scanId}`}: its consensus runs again once they submit.`,
    );
  });
}

// Every figure comes from the server, one bounded request each: the rater table is computed there
// (SQL aggregates), the open assignments and the scans are first pages. Nothing reads all of the
// project's assignments or scans, so the page costs the same at 100 scans and at 10,000.
async function refresh() {
  const id = app.project.id;
  const linked = Number(new URLSearchParams(window.location.search).get("scan")) || null;
  const [members, stats, open, scans] = await Promise.all([
    consoleApi.members(id),
    consoleApi.raterStats(id),
    consoleApi.openAssignments(id),
    extraScans(id, linked),
  ]);
  Object.assign(app, { members, stats, open: open.items, openTotal: open.total, scans });
  fillBody($("members-body"), members.map(memberRow), { empty: "No members.", columns: 3 });
  renderStats();
  renderOpen();
  renderExtraForm();
}

async function main() {
  const loaded = await loadManagedProject("people", "People and assignments");
  if (!loaded) return;
  app.project = loaded.project;
  app.me = loaded.me;
  $("project-title").textContent = `People · ${app.project.name}`;
  await refresh();
  wireMemberForm();
  wireUserForm();
  wireExtraForm();
  $("people").hidden = false;
  markReady();
}

runPage(main);
