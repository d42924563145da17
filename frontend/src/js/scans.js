// The Scans page of a project (/projects/<id>/scans/), for its leads and admins: upload NIfTI
// files or a .zip of them (scan-uploads.js), import a DICOM study as a job with a review of its
// series' roles (dicom-import.js), the table of scans (paged and filtered on the
// server) with their raters' progress and metadata (and, when the project declares several
// sequences, which each scan has, with a NIfTI upload for one it lacks), a scan's split and metadata edited in place,
// splits dealt by rule (preview, then apply), and metadata for many scans from a CSV (preview,
// then apply). Annotators get a refusal (console-page.js); the API refuses them all of it.
import { ApiError } from "./api.js";
import { loadManagedProject } from "./console-page.js";
import { DicomImportPanel } from "./dicom-import.js";
import { UploadQueue } from "./scan-uploads.js";
import { channelsApi, scanPage, scansApi } from "./scans-api.js";
import { $, markReady, runPage } from "./session.js";
import { badge, cell, fillBody, fmt, link, row } from "./tables.js";

const STATUS_TEXT = {
  new: "New",
  in_progress: "Being rated",
  submitted: "Submitted",
  consensus: "Consensus",
  flagged: "Flagged",
  ground_truth: "Ground truth",
};
const SPLIT_TEXT = { unassigned: "Unassigned", train: "Train", validation: "Validation", test: "Test" };
const METADATA = ["site", "scanner", "field_strength", "sequence", "sex", "age_band"];
const COLUMNS = 12;

/** True when the project's scans hold several sequences: the table gets a Sequences column. */
function multiChannel() {
  return (app.project?.channels?.length ?? 0) > 1;
}

/** Test hook (read-only use): window.mriannot. */
const app = { project: null, vocabulary: null, queue: null, table: { rows: [], total: 0 }, plan: null, csv: null };
window.mriannot = app;

// --- small DOM helpers -----------------------------------------------------------------------

function options(select, entries, selected = "") {
  select.replaceChildren(
    ...entries.map(([value, text]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      option.selected = value === selected;
      return option;
    }),
  );
}

function showError(element, error) {
  element.textContent = error ? (error instanceof ApiError ? error.message : `${error.message || error}`) : "";
  element.hidden = !error;
}

function metadataValues(prefix) {
  const values = {};
  for (const column of METADATA) {
    const value = $(`${prefix}-${column}`).value.trim();
    values[column] = value;
  }
  return values;
}

function fillVocabularies(vocabulary) {
  const blank = [["", "not recorded"]];
  for (const prefix of ["batch", "edit"]) {
    for (const column of ["sequence", "sex", "age_band"]) {
      options($(`${prefix}-${column}`), [...blank, ...vocabulary.vocabularies[column].map((v) => [v, v])]);
    }
  }
  const splits = Object.entries(SPLIT_TEXT);
  options($("batch-split"), splits, "unassigned");
  options($("edit-split"), splits);
  options($("filter-split"), [["", "any"], ...splits]);
  options($("filter-status"), [["", "any"], ...Object.entries(STATUS_TEXT)]);
  options($("split-stratify"), [["", "none"], ...vocabulary.columns.map((c) => [c, vocabulary.titles[c]])]);
  $("csv-columns").textContent = vocabulary.columns.join(", ");
}

// --- uploads ---------------------------------------------------------------------------------

function batchFields() {
  const fields = metadataValues("batch");
  fields.split = $("batch-split").value;
  return fields;
}

function wireUploads(projectId) {
  app.queue = new UploadQueue(projectId, {
    tbody: $("upload-body"),
    table: $("upload-table"),
    summary: $("upload-summary"),
    onSettled: () => scheduleReload(),
  });
  const zone = $("drop-zone");
  const input = $("file-input");
  const take = (files) => {
    if (files?.length) app.queue.add([...files], batchFields());
  };
  zone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    zone.classList.add("dragover");
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragover");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    take(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.target === zone && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    take(input.files);
    input.value = ""; // the same files may be chosen again
  });
}

// --- the table -------------------------------------------------------------------------------

const table = { offset: 0, limit: 25, request: 0 };
let reloadTimer = null;

/** Reload the table soon (uploads settle one after another: one reload for a burst). */
function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadTable().catch((error) => showError($("table-error"), error)), 300);
}

function query() {
  return {
    status: $("filter-status").value,
    split: $("filter-split").value,
    q: $("filter-text").value.trim(),
    limit: table.limit,
    offset: table.offset,
  };
}

function ratersCell(scan) {
  const wrap = document.createElement("span");
  wrap.className = "raters";
  wrap.textContent = `${scan.raters_submitted}/${scan.raters_assigned} submitted`;
  if (scan.raters.length) {
    const names = document.createElement("span");
    names.className = "muted";
    names.textContent = scan.raters.map((r) => `${r.username}${r.status === "submitted" ? " ✓" : ""}`).join(", ");
    wrap.append(names);
  }
  wrap.title = scan.raters.map((r) => `${r.username}: ${r.status}`).join("\n");
  return cell(wrap);
}

function splitCell(scan) {
  const select = document.createElement("select");
  select.setAttribute("aria-label", `Split of scan ${scan.id}`);
  select.dataset.scan = String(scan.id);
  options(select, Object.entries(SPLIT_TEXT), scan.split);
  select.addEventListener("change", () => changeSplit(scan, select));
  return cell(select);
}

function renderTable({ rows, total }) {
  app.table = { rows, total };
  const body = rows.map((scan) => {
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "secondary small";
    edit.textContent = "Edit";
    edit.addEventListener("click", () => openEdit(scan));
    return row(
      [
        cell(link(`/review/${scan.id}/`, `#${scan.id}`)),
        cell([scan.subject_id || "–", scan.session_id].filter(Boolean).join(" / "), { title: scan.original_filename }),
        splitCell(scan),
        cell(badge(STATUS_TEXT[scan.status] || scan.status, `status-${scan.status}`)),
        ratersCell(scan),
        cell(scan.site || "–"),
        cell(scan.scanner || "–"),
        cell(scan.field_strength === null ? "–" : fmt(scan.field_strength, 1), { num: true }),
        cell(scan.sequence || "–"),
        ...(multiChannel() ? [channelsCell(scan)] : []),
        cell(scan.sex || "–"),
        cell(scan.age_band || "–"),
        cell(edit),
      ],
      { scan: scan.id, split: scan.split, status: scan.status },
    );
  });
  fillBody($("scan-body"), body, {
    empty: total ? "No scan on this page." : "No scan matches.",
    columns: COLUMNS + (multiChannel() ? 1 : 0),
  });
  if (multiChannel()) for (const scan of rows) loadChannels(scan);
  const first = total ? table.offset + 1 : 0;
  const last = table.offset + rows.length;
  $("page-text").textContent = `${first}–${last} of ${total}`;
  $("table-count").textContent = `${total} scan${total === 1 ? "" : "s"} match`;
  $("page-prev").disabled = table.offset === 0;
  $("page-next").disabled = last >= total;
}

async function loadTable() {
  const ticket = ++table.request; // an older answer arriving late is dropped
  const page = await scanPage(app.project.id, query());
  if (ticket !== table.request) return;
  if (!page.rows.length && page.total && table.offset >= page.total) {
    table.offset = Math.max(0, Math.floor((page.total - 1) / table.limit) * table.limit);
    await loadTable();
    return;
  }
  showError($("table-error"), null);
  renderTable(page);
  document.getElementById("scan-table").dataset.loaded = String(table.request);
}

function wireTable() {
  const reload = () => {
    table.offset = 0;
    loadTable().catch((error) => showError($("table-error"), error));
  };
  $("filter-status").addEventListener("change", reload);
  $("filter-split").addEventListener("change", reload);
  $("page-size").addEventListener("change", () => {
    table.limit = Number($("page-size").value);
    reload();
  });
  let typing = null;
  $("filter-text").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(reload, 250);
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    reload();
  });
  $("page-prev").addEventListener("click", () => {
    table.offset = Math.max(0, table.offset - table.limit);
    loadTable().catch((error) => showError($("table-error"), error));
  });
  $("page-next").addEventListener("click", () => {
    table.offset += table.limit;
    loadTable().catch((error) => showError($("table-error"), error));
  });
}

// --- a scan's sequences (channels): which it has, and a NIfTI for one it lacks ------------------------

function channelsCell(scan) {
  const td = cell("…", { className: "channel-list" });
  td.dataset.channels = String(scan.id);
  return td;
}

function channelsTd(scanId) {
  return document.querySelector(`#scan-body td[data-channels="${scanId}"]`);
}

async function loadChannels(scan) {
  try {
    renderChannels(scan, await channelsApi.list(scan.id));
  } catch (error) {
    const td = channelsTd(scan.id);
    if (td) td.textContent = "–";
    showError($("table-error"), error);
  }
}

function renderChannels(scan, channels) {
  const td = channelsTd(scan.id);
  if (!td) return; // the table was rendered again meanwhile
  td.dataset.present = channels.filter((c) => c.present).map((c) => c.role).join(",");
  const parts = channels.map((channel) => {
    const span = document.createElement("span");
    span.className = channel.present ? "" : "missing";
    span.dataset.role = channel.role;
    if (channel.present) {
      span.textContent = `${channel.role} ✓`;
      span.title = channel.reference
        ? "the scan's own image"
        : channel.resampled
          ? `resampled onto the scan's grid (covers ${Math.round(100 * channel.coverage)} % of it)`
          : "on the scan's grid";
      return span;
    }
    span.textContent = `${channel.role} missing `;
    const input = Object.assign(document.createElement("input"), { type: "file", accept: ".nii,.gz,.nii.gz", hidden: true });
    input.dataset.channelInput = `${scan.id}-${channel.role}`;
    const add = Object.assign(document.createElement("button"), { type: "button", className: "secondary small", textContent: "Add" });
    add.setAttribute("aria-label", `Add the ${channel.role} of scan ${scan.id}`);
    add.addEventListener("click", () => input.click());
    input.addEventListener("change", async () => {
      const file = input.files[0];
      if (!file) return;
      add.disabled = true;
      add.textContent = "Uploading…";
      try {
        renderChannels(scan, await channelsApi.add(scan.id, channel.role, file));
        showError($("table-error"), null);
      } catch (error) {
        showError($("table-error"), error);
        add.disabled = false;
        add.textContent = "Add";
      }
    });
    span.append(add, input);
    return span;
  });
  td.replaceChildren(...parts.flatMap((part, i) => (i ? [" ", part] : [part])));
}

async function changeSplit(scan, select) {
  const tr = select.closest("tr");
  tr.classList.add("saving");
  try {
    await scansApi.updateScan(scan.id, { split: select.value });
    scheduleReload();
  } catch (error) {
    const wanted = select.value;
    select.value = scan.split;
    if (error instanceof ApiError && error.code === "split_frozen") {
      openEdit(scan, { split: wanted, frozen: error.body.model_versions });
    } else {
      showError($("table-error"), error);
    }
  } finally {
    tr.classList.remove("saving");
  }
}

// --- one scan: the edit dialog ----------------------------------------------------------------

let editing = null;

function versionsText(versions) {
  return versions.map((v) => `v${v.version}`).join(", ");
}

function showFrozen(versions) {
  $("edit-frozen-text").textContent =
    `A model trained or validated on this scan: model version${versions.length === 1 ? "" : "s"} ${versionsText(versions)}. ` +
    "Changing its split makes their validation figures misleading; the change is recorded with the versions it invalidates.";
  $("edit-frozen").hidden = false;
  $("edit-override").checked = false;
}

function openEdit(scan, { split = null, frozen = null } = {}) {
  editing = scan;
  $("edit-title").textContent = `Scan #${scan.id}${scan.subject_id ? ` · ${scan.subject_id}` : ""}`;
  for (const column of METADATA) {
    const value = scan[column];
    $(`edit-${column}`).value = value === null || value === undefined ? "" : String(value);
  }
  $("edit-split").value = split ?? scan.split;
  showError($("edit-error"), null);
  $("edit-frozen").hidden = true;
  if (frozen) showFrozen(frozen);
  $("edit-dialog").showModal();
}

async function saveEdit() {
  const scan = editing;
  const fields = {};
  const values = metadataValues("edit");
  for (const column of METADATA) {
    const before = scan[column] === null || scan[column] === undefined ? "" : String(scan[column]);
    if (values[column] !== before) fields[column] = column === "field_strength" ? (values[column] === "" ? null : Number(values[column])) : values[column];
  }
  if ($("edit-split").value !== scan.split) fields.split = $("edit-split").value;
  if (!$("edit-frozen").hidden && $("edit-override").checked) fields.override_frozen = true;
  if (!Object.keys(fields).length) {
    $("edit-dialog").close();
    return;
  }
  $("edit-save").disabled = true;
  try {
    await scansApi.updateScan(scan.id, fields);
    $("edit-dialog").close();
    await loadTable();
  } catch (error) {
    if (error instanceof ApiError && error.code === "split_frozen") {
      showFrozen(error.body.model_versions);
      showError($("edit-error"), error);
    } else {
      showError($("edit-error"), error);
    }
  } finally {
    $("edit-save").disabled = false;
  }
}

function wireEdit() {
  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveEdit().catch((error) => showError($("edit-error"), error));
  });
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
}

// --- splits by rule ---------------------------------------------------------------------------

function rule() {
  const number = (id) => Number.parseInt($(id).value, 10);
  return {
    train: number("split-train"),
    validation: number("split-validation"),
    test: number("split-test"),
    seed: number("split-seed"),
    stratify_by: $("split-stratify").value,
    scope: $("split-scope").value,
  };
}

function renderPlan(plan) {
  app.plan = plan;
  const c = plan.counts;
  $("split-summary").textContent =
    `${plan.scans} scan${plan.scans === 1 ? "" : "s"} dealt, ${plan.changed} change split. ` +
    `After this: ${c.train} train, ${c.validation} validation, ${c.test} test, ${c.unassigned} unassigned.`;
  fillBody(
    $("split-strata"),
    plan.strata.map((s) =>
      row(
        [
          cell(s.stratum),
          cell(String(s.scans), { num: true }),
          cell(String(s.train), { num: true }),
          cell(String(s.validation), { num: true }),
          cell(String(s.test), { num: true }),
        ],
        { stratum: s.stratum },
      ),
    ),
    { empty: "No scan to deal.", columns: 5 },
  );
  const frozen = plan.frozen.length > 0;
  $("split-frozen").hidden = !frozen;
  $("split-override-label").hidden = !frozen;
  $("split-override").checked = false;
  if (frozen) {
    $("split-frozen-text").textContent =
      `${plan.frozen.length} scan${plan.frozen.length === 1 ? "" : "s"} that a model used would move; ` +
      `this invalidates model version${plan.invalidated_model_versions.length === 1 ? "" : "s"} ` +
      `${versionsText(plan.invalidated_model_versions)}. Tick the box to move them anyway.`;
    $("split-frozen-list").replaceChildren(
      ...plan.frozen.slice(0, 20).map((f) => {
        const li = document.createElement("li");
        li.textContent = `scan ${f.scan}${f.subject_id ? ` (${f.subject_id})` : ""}: ${f.from} → ${f.to}, used by ${versionsText(f.model_versions)}`;
        return li;
      }),
    );
  }
  $("split-preview-box").hidden = false;
  $("split-apply").disabled = plan.changed === 0;
}

function wireSplits(projectId) {
  const form = $("split-form");
  const stale = () => {
    $("split-apply").disabled = true; // the preview no longer shows this rule
    $("split-result").hidden = true;
  };
  form.addEventListener("input", (event) => {
    if (event.target.id !== "split-override") stale();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError($("split-error"), null);
    $("split-result").hidden = true;
    try {
      renderPlan(await scansApi.previewSplit(projectId, rule()));
    } catch (error) {
      $("split-preview-box").hidden = true;
      showError($("split-error"), error);
    }
  });
  $("split-apply").addEventListener("click", async () => {
    showError($("split-error"), null);
    $("split-apply").disabled = true;
    try {
      const result = await scansApi.applySplit(projectId, {
        ...rule(),
        plan_id: app.plan.plan_id,
        override_frozen: $("split-override").checked,
      });
      const invalidated = result.invalidated_model_versions;
      $("split-result").textContent =
        `Applied: ${result.changed} scan${result.changed === 1 ? "" : "s"} moved.` +
        (invalidated.length ? ` Model version${invalidated.length === 1 ? "" : "s"} ${versionsText(invalidated)} invalidated.` : "");
      $("split-result").hidden = false;
      $("split-preview-box").hidden = true;
      await loadTable();
    } catch (error) {
      showError($("split-error"), error);
      $("split-apply").disabled = false;
    }
  });
}

// --- metadata from a CSV ----------------------------------------------------------------------

function changesText(changes) {
  return Object.entries(changes)
    .map(([column, [before, after]]) => `${column}: ${before === "" || before === null ? "–" : before} → ${after}`)
    .join("; ");
}

function renderCsv(result) {
  app.csv = result;
  fillBody(
    $("csv-body"),
    result.rows.map((r) =>
      row(
        [
          cell(String(r.line), { num: true }),
          cell(r.scan ? link(`/review/${r.scan}/`, `#${r.scan}`) : "–"),
          cell([r.subject_id, r.session_id].filter(Boolean).join(" / ") || "–"),
          cell(r.errors.length ? "" : changesText(r.changes) || "no change"),
          cell(r.errors.join("; "), { className: "errors" }),
        ],
        { line: r.line, errors: r.errors.length },
      ),
    ),
    { empty: "The CSV has no rows.", columns: 5 },
  );
  $("csv-table").hidden = false;
  $("csv-summary").hidden = false;
  $("csv-summary").textContent = result.applied
    ? `Applied: ${result.changes} scan${result.changes === 1 ? "" : "s"} changed.`
    : `${result.rows.length} rows: ${result.changes} would change a scan, ${result.errors} in error` +
      (result.errors ? " (fix them first: nothing is changed while a row is in error)." : ".");
  $("csv-summary").className = result.errors ? "error" : result.applied ? "result-ok" : "";
  $("csv-apply").disabled = result.applied || result.errors > 0 || result.changes === 0;
}

function wireCsv(projectId) {
  const file = () => $("csv-file").files[0];
  $("csv-file").addEventListener("change", () => {
    $("csv-preview").disabled = !file();
    $("csv-apply").disabled = true;
    $("csv-table").hidden = $("csv-summary").hidden = true;
    showError($("csv-error"), null);
  });
  const send = async (apply) => {
    showError($("csv-error"), null);
    try {
      renderCsv(await scansApi.metadataCsv(projectId, file(), apply));
      if (apply) await loadTable();
    } catch (error) {
      if (error instanceof ApiError && error.code === "csv_rows_refused") {
        renderCsv({ rows: error.body.rows, errors: error.body.rows.length, changes: 0, applied: false });
      }
      showError($("csv-error"), error);
    }
  };
  $("csv-preview").addEventListener("click", () => send(false));
  $("csv-apply").addEventListener("click", () => send(true));
}

// --- start ---------------------------------------------------------------------------------------

async function main() {
  const loaded = await loadManagedProject("scans", "Scans");
  if (!loaded) return;
  const { project } = loaded;
  app.project = project;
  $("th-channels").hidden = !multiChannel();
  $("project-title").textContent = `Scans · ${project.name}`;
  $("simulated-notice").hidden = !project.is_simulated;
  app.vocabulary = await scansApi.vocabulary(project.id);
  fillVocabularies(app.vocabulary);
  wireUploads(project.id);
  app.dicom = new DicomImportPanel(project.id, { onCreated: () => scheduleReload(), splits: Object.entries(SPLIT_TEXT) });
  wireTable();
  wireEdit();
  wireSplits(project.id);
  wireCsv(project.id);
  $("scans-page").hidden = false;
  await loadTable();
  await app.dicom.resume().catch((error) => app.dicom.fail(error));
  markReady();
}

runPage(main);
