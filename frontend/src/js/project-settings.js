// A project's settings page (/projects/<id>/settings/), for its leads and admins: the label
// schema (value, name, colour, number key), the sequences every scan holds (an ordered list:
// the first is the scan's own image) and the project's form (name, description, raters
// per scan, the rules that flag a consensus for a lead, active learning and the pre-label
// policy). Only what changed is sent; the server audits every change (project.update,
// label.create / update / delete) and refuses what breaks saved work: once a rater has saved
// labels, values are fixed and labels cannot be removed.
import { ApiError } from "./api.js";
import { consoleApi } from "./console-api.js";
import { loadManagedProject } from "./console-page.js";
import { $, markReady, runPage } from "./session.js";
import { cell, fillBody, row } from "./tables.js";

/** Test hook (read-only use): window.mriannot. */
const app = { project: null, labels: [], locked: false, channels: [] };
window.mriannot = app;

const STRATEGIES = [
  ["entropy", "MC-dropout entropy (most uncertain first)"],
  ["bald", "BALD (where the model's samples disagree)"],
  ["entropy_disagreement", "Entropy weighed with rater disagreement"],
  ["entropy_stratified", "Entropy spread over the rarest label's expected volume (lesion load: keeps lesion-free-looking scans in each batch)"],
  ["random", "Random"],
];

export const PRELABEL_POLICIES = [
  ["offered", "Offered: the rater chooses to start blank or from the model"],
  ["applied", "Applied: the viewer starts from the model's drawing"],
  ["off", "Off: no pre-label is shown"],
];

const PRELABEL_HINT =
  "With several raters per scan, “offered” keeps them independent (a drawing everyone starts from ties their errors " +
  "to the model's, and the consensus would measure the model); “applied” saves a single rater the most time. " +
  "Every revision records whether it started from the model.";

/** The form's fields: element id, project field, kind. */
const FIELDS = [
  ["f-name", "name", "text"],
  ["f-description", "description", "text"],
  ["f-raters", "raters_per_scan", "int"],
  ["f-ambiguity", "ambiguity_threshold", "float"],
  ["f-min-dice", "flag_min_label_dice", "optional"],
  ["f-volume-spread", "flag_max_volume_spread", "optional"],
  ["f-rater-gap", "flag_max_rater_gap", "optional"],
  ["f-strategy", "al_strategy", "text"],
  ["f-retrain", "al_retrain_every", "int"],
  ["f-prelabel", "prelabel_policy", "text"],
];

function options(select, pairs, { value } = {}) {
  select.replaceChildren(
    ...pairs.map(([v, text]) => Object.assign(document.createElement("option"), { value: v, textContent: text })),
  );
  if (value !== undefined) select.value = value;
}

function keyOptions(select, current) {
  options(select, [["", "none"], ...Array.from({ length: 9 }, (_, i) => [String(i + 1), String(i + 1)])], {
    value: current == null ? "" : String(current),
  });
}

function message(id, text, { error = false } = {}) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", error);
}

function errorText(error) {
  return error instanceof ApiError ? error.message : `${error.message}`;
}

// --- label schema ------------------------------------------------------------------------------

function labelRow(label) {
  const value = Object.assign(document.createElement("input"), { type: "number", min: 1, max: 255, value: label.value });
  value.disabled = app.locked;
  value.title = app.locked ? "Fixed: raters have saved labels with this value." : "";
  value.setAttribute("aria-label", `Value of ${label.name}`);
  const name = Object.assign(document.createElement("input"), { value: label.name, maxLength: 100 });
  name.setAttribute("aria-label", `Name of label ${label.value}`);
  const color = Object.assign(document.createElement("input"), { type: "color", value: label.color });
  color.setAttribute("aria-label", `Colour of ${label.name}`);
  const key = document.createElement("select");
  keyOptions(key, label.key);
  key.setAttribute("aria-label", `Key of ${label.name}`);
  const save = Object.assign(document.createElement("button"), { type: "button", textContent: "Save", className: "small" });
  const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete", className: "small secondary" });
  remove.disabled = app.locked;
  remove.title = app.locked ? "Labels cannot be removed once raters have saved labels." : "";
  save.addEventListener("click", async () => {
    const fields = {};
    if (!app.locked && Number(value.value) !== label.value) fields.value = Number(value.value);
    if (name.value.trim() !== label.name) fields.name = name.value.trim();
    if (color.value.toLowerCase() !== label.color.toLowerCase()) fields.color = color.value;
    if (key.value && Number(key.value) !== label.key) fields.key = Number(key.value);
    if (!Object.keys(fields).length) {
      message("labels-result", `Nothing changed in “${label.name}”.`);
      return;
    }
    try {
      const saved = await consoleApi.updateLabel(app.project.id, label.id, fields);
      await reloadLabels();
      message("labels-result", `Saved “${saved.name}” (${Object.keys(fields).join(", ")}).`);
    } catch (error) {
      message("labels-result", errorText(error), { error: true });
    }
  });
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Remove the label “${label.name}” (${label.value})?`)) return;
    try {
      await consoleApi.deleteLabel(app.project.id, label.id);
      await reloadLabels();
      message("labels-result", `Removed “${label.name}”.`);
    } catch (error) {
      message("labels-result", errorText(error), { error: true });
    }
  });
  const actions = document.createElement("span");
  actions.className = "row";
  actions.append(save, remove);
  return row([cell(value), cell(name), cell(color), cell(key), cell(actions)], { value: label.value, label: label.id });
}

function renderLabels() {
  fillBody($("labels-body"), app.labels.map(labelRow), { empty: "No labels yet: add the first below.", columns: 5 });
  $("schema-lock").hidden = !app.locked;
  const taken = new Set(app.labels.map((l) => l.key).filter((k) => k != null));
  const free = Array.from({ length: 9 }, (_, i) => i + 1).filter((k) => !taken.has(k));
  options($("label-key"), [["", free.length ? `next free (${free[0]})` : "none"], ...free.map((k) => [String(k), String(k)])]);
  const used = new Set(app.labels.map((l) => l.value));
  let next = 1;
  while (used.has(next) && next < 255) next += 1;
  $("label-value").value = String(next);
}

async function reloadLabels() {
  const [labels, summary] = await Promise.all([consoleApi.labels(app.project.id), consoleApi.summary(app.project.id)]);
  app.labels = labels;
  app.locked = summary.schema_locked;
  renderLabels();
}

function wireLabelForm() {
  $("label-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = {
      value: Number($("label-value").value),
      name: $("label-name").value.trim(),
      color: $("label-color").value,
      key: $("label-key").value ? Number($("label-key").value) : null,
    };
    $("label-add").disabled = true;
    try {
      await consoleApi.addLabel(app.project.id, label);
      $("label-name").value = "";
      await reloadLabels();
      message("labels-result", `Added “${label.name}” (value ${label.value}).`);
    } catch (error) {
      message("labels-result", errorText(error), { error: true });
    } finally {
      $("label-add").disabled = false;
    }
  });
}

// --- the sequences of a scan (channels) ---------------------------------------------------------

/** The sequences a project may declare (labeling/metadata.py SEQUENCES), at most MAX_CHANNELS. */
export const SEQUENCES = ["T1w", "T2w", "FLAIR", "PD", "other"];
const MAX_CHANNELS = 4;

function channelButton(text, action, role, disabled) {
  const button = Object.assign(document.createElement("button"), { type: "button", textContent: text, className: "small secondary" });
  button.dataset.action = action;
  button.disabled = disabled;
  button.setAttribute("aria-label", `${text} ${role}`);
  return button;
}

function renderChannels() {
  const list = app.channels;
  const rows = list.map((role, i) => {
    const up = channelButton("Up", "up", role, i === 0);
    const down = channelButton("Down", "down", role, i === list.length - 1);
    const remove = channelButton("Remove", "remove", role, false);
    const move = (from, to) => {
      const next = [...app.channels];
      [next[from], next[to]] = [next[to], next[from]];
      app.channels = next;
      renderChannels();
    };
    up.addEventListener("click", () => move(i, i - 1));
    down.addEventListener("click", () => move(i, i + 1));
    remove.addEventListener("click", () => {
      app.channels = app.channels.filter((r) => r !== role);
      renderChannels();
    });
    const actions = document.createElement("span");
    actions.className = "row";
    actions.append(up, down, remove);
    const what = i === 0 ? "the scan's own image and grid" : "beside it, on its grid";
    return row([cell(String(i + 1), { num: true }), cell(role), cell(what, { className: "muted" }), cell(actions)], { role });
  });
  fillBody($("channels-body"), rows, { empty: "None: one image per scan.", columns: 4 });
  const free = SEQUENCES.filter((role) => !list.includes(role));
  options($("channel-role"), free.map((role) => [role, role]));
  $("channel-add").disabled = !free.length || list.length >= MAX_CHANNELS;
  const saved = JSON.stringify(list) === JSON.stringify(app.project.channels ?? []);
  $("channels-save").disabled = saved;
}

function wireChannels() {
  app.channels = [...(app.project.channels ?? [])];
  renderChannels();
  $("channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const role = $("channel-role").value;
    if (role && !app.channels.includes(role)) app.channels = [...app.channels, role];
    message("channels-result", "");
    renderChannels();
  });
  $("channels-save").addEventListener("click", async () => {
    $("channels-save").disabled = true;
    try {
      app.project = await consoleApi.updateProject(app.project.id, { channels: app.channels });
      app.channels = [...app.project.channels];
      message("channels-result", `Saved: ${app.channels.length ? app.channels.join(", ") : "one image per scan"}.`);
    } catch (error) {
      message("channels-result", errorText(error), { error: true });
    } finally {
      renderChannels();
    }
  });
}

// --- the project's form ------------------------------------------------------------------------

function fillForm(project) {
  for (const [id, field, kind] of FIELDS) {
    const value = project[field];
    $(id).value = kind === "optional" && value === null ? "" : String(value ?? "");
  }
}

/** The fields whose form value differs from the project's (flag rules: empty = off = null). */
function changedFields(project) {
  const changed = {};
  for (const [id, field, kind] of FIELDS) {
    const raw = $(id).value;
    let value;
    if (kind === "int") value = Number.parseInt(raw, 10);
    else if (kind === "float") value = Number.parseFloat(raw);
    else if (kind === "optional") value = raw.trim() === "" ? null : Number.parseFloat(raw);
    else value = field === "description" ? raw : raw.trim();
    if (value !== project[field]) changed[field] = value;
  }
  return changed;
}

function wireProjectForm() {
  $("project-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = changedFields(app.project);
    if (!Object.keys(fields).length) {
      message("project-result", "Nothing changed.");
      return;
    }
    $("project-save").disabled = true;
    try {
      app.project = await consoleApi.updateProject(app.project.id, fields);
      fillForm(app.project);
      $("project-title").textContent = `Settings · ${app.project.name}`;
      message("project-result", `Saved: ${Object.keys(fields).join(", ")}.`);
    } catch (error) {
      message("project-result", errorText(error), { error: true });
    } finally {
      $("project-save").disabled = false;
    }
  });
}

async function main() {
  const loaded = await loadManagedProject("settings", "Project settings");
  if (!loaded) return;
  app.project = loaded.project;
  $("project-title").textContent = `Settings · ${app.project.name}`;
  options($("f-strategy"), STRATEGIES);
  options($("f-prelabel"), PRELABEL_POLICIES);
  $("prelabel-hint").textContent = PRELABEL_HINT;
  fillForm(app.project);
  await reloadLabels();
  wireLabelForm();
  wireChannels();
  wireProjectForm();
  if (new URLSearchParams(window.location.search).get("created")) {
    message("labels-result", "Project created: add its labels, then its annotators on the People page.");
  }
  $("settings").hidden = false;
  markReady();
}

runPage(main);
