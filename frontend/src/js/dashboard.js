// The agreement dashboard of a project (/dashboard/<project>/), for its leads and admins:
// flagged raters, pairwise rater Dice heat map, per-rater performance, agreement over time,
// the least-agreed scans (linking to their review), per-label and per-rater tables, a CSV
// download of every table, the active-learning card (models-panel.js) and the health of the
// job queues (queues.js). /dashboard/ lists the projects the user leads or administers.
import { ApiError, api } from "./api.js";
import { barChart, colourBar, diceDomain, heatMap, lineChart } from "./charts.js";
import { AGREEMENT_TABLES, leadApi } from "./lead-api.js";
import { renderBreakdown } from "./metadata-breakdown.js";
import { showModels } from "./models-panel.js";
import { renderProjectNav } from "./project-nav.js";
import { showQueues } from "./queues.js";
import { $, idFromPath, markReady, requireUser, runPage, showUser } from "./session.js";
import { badge, cell, fillBody, fmt, link, pct, row } from "./tables.js";


const MANAGER_ROLES = new Set(["lead", "admin"]);

const TABLE_TITLES = {
  scans: "Scans (least agreed first)",
  pairs: "Every scan, label and rater pair",
  per_label: "Per label",
  per_rater: "Per rater",
  rater_matrix: "Pairwise rater Dice (heat map)",
  over_time: "Agreement over time",
  by_metadata: "Agreement by scan metadata",
};

const STATUS_TEXT = {
  new: "New",
  in_progress: "Being rated",
  submitted: "Submitted",
  consensus: "Consensus",
  flagged: "Flagged",
  ground_truth: "Ground truth",
};

/** Test hook (read-only use): window.mriannot. */
const app = { agreement: null, charts: {}, project: null };
window.mriannot = app;

function showForbidden(text) {
  $("forbidden-text").textContent = text;
  $("forbidden").hidden = false;
  markReady("forbidden");
}

// --- project chooser (/dashboard/) ------------------------------------------------------------

async function showChooser(me) {
  const projects = await api.projects();
  const managed = projects.filter((p) => MANAGER_ROLES.has(p.my_role));
  if (!managed.length) {
    showForbidden("You lead or administer no project, so there is no agreement dashboard for you to see.");
    return;
  }
  $("project-list").replaceChildren(
    ...managed.map((p) => {
      const li = document.createElement("li");
      li.append(link(`/dashboard/${p.id}/`, p.name), ` · ${p.my_role}${p.is_simulated ? " · simulated data" : ""} · `, link(`/exports/${p.id}/`, "exports"));
      return li;
    }),
  );
  $("project-chooser").hidden = false;
  markReady();
  return me;
}

// --- sections ------------------------------------------------------------------------------

function renderRaterFlags(data) {
  const flagged = data.per_rater.filter((r) => r.flagged);
  const list = $("flagged-raters");
  const section = $("rater-flags");
  section.dataset.flagged = String(flagged.length);
  if (!data.per_rater.length) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "No rater has been measured yet." }));
  } else if (!flagged.length) {
    list.replaceChildren(
      Object.assign(document.createElement("li"), {
        className: "ok",
        textContent: `No rater is flagged: all ${data.per_rater.length} raters agree with the consensus within the rule below.`,
      }),
    );
  } else {
    list.replaceChildren(
      ...flagged.map((r) => {
        const li = document.createElement("li");
        li.dataset.rater = r.rater;
        const name = document.createElement("strong");
        name.textContent = r.rater;
        li.append(
          "⚑ ",
          name,
          `: mean Dice against the consensus ${fmt(r.mean_dice_vs_consensus)}, ${fmt(r.below_median_by)} below the project median, over ${r.scans} scan${r.scans === 1 ? "" : "s"}.`,
        );
        return li;
      }),
    );
  }
  const rule = data.rater_flag_rule || {};
  $("flag-rule").textContent =
    rule.median_dice === null || rule.median_dice === undefined
      ? ""
      : `Rule: a rater is flagged when their mean Dice against the consensus is below the project median (${fmt(rule.median_dice)}) ` +
        `by more than ${rule.mads} robust standard deviations (${rule.mads} × ${fmt(rule.robust_sd)}) and by at least ${rule.min_gap} in Dice.`;
  section.classList.toggle("has-flags", flagged.length > 0);
}

function renderHeatMap(data) {
  const raters = [...new Set(data.rater_matrix.flatMap((m) => [m.rater_a, m.rater_b]))].sort();
  const byPair = new Map();
  for (const m of data.rater_matrix) {
    byPair.set(`${m.rater_a}\u0000${m.rater_b}`, m);
    byPair.set(`${m.rater_b}\u0000${m.rater_a}`, m);
  }
  const flagged = new Set(data.per_rater.filter((r) => r.flagged).map((r) => r.rater));
  const domain = diceDomain(data.rater_matrix.map((m) => m.mean_dice));
  heatMap($("heatmap"), {
    names: raters,
    valueOf: (a, b) => {
      const m = byPair.get(`${a}\u0000${b}`);
      return m ? { value: m.mean_dice, n: m.n } : null;
    },
    domain,
    nameLabel: (name) => (flagged.has(name) ? `${name} ⚑` : name),
  });
  colourBar($("heatmap-legend"), domain, { title: "Mean pairwise Dice (colour scale)" });
  $("heatmap-legend").hidden = raters.length === 0;
}

function renderRaterChart(data) {
  const raters = data.per_rater;
  app.charts.rater?.destroy();
  app.charts.rater = barChart($("rater-chart"), {
    categories: raters.map((r) => (r.flagged ? `${r.rater} ⚑ flagged` : r.rater)),
    series: [
      { name: "Dice vs consensus", values: raters.map((r) => r.mean_dice_vs_consensus) },
      { name: "Sensitivity", values: raters.map((r) => r.mean_sensitivity) },
      { name: "Specificity", values: raters.map((r) => r.mean_specificity) },
    ],
    xTitle: "Rater",
    yTitle: "Mean over scans and labels",
  });
}

function renderTimeChart(data) {
  const days = [...new Set(data.over_time.map((r) => r.date))].sort();
  const series = data.labels.map((label) => {
    const byDay = new Map(data.over_time.filter((r) => r.label === label.value).map((r) => [r.date, r.mean_dice]));
    return { name: label.name, values: days.map((d) => byDay.get(d) ?? null) };
  });
  app.charts.time?.destroy();
  app.charts.time = lineChart($("time-chart"), {
    categories: days,
    series,
    xTitle: "Day the consensus finished",
    yTitle: "Mean pairwise Dice",
  });
}

/** The flagged badge and, beside it, the first reason (all of them in the cell's title). */
function flaggedWithReasons(reasons) {
  const span = document.createElement("span");
  span.className = "flag-cell";
  const parts = (reasons || "").split("; ").filter(Boolean);
  const text = document.createElement("small");
  text.className = "flag-reason";
  text.textContent = parts.length > 1 ? `${parts[0]} (+${parts.length - 1} more)` : parts[0] || "";
  span.append(badge("flagged", "flag"), " ", text);
  return span;
}

function renderScans(data) {
  const rows = data.scans.map((s) =>
    row(
      [
        cell(s.subject_id || `scan ${s.scan}`),
        cell(badge(STATUS_TEXT[s.status] || s.status, `status-${s.status}`)),
        cell(fmt(s.mean_pairwise_dice), { num: true }),
        cell(fmt(s.fleiss_kappa), { num: true }),
        cell(fmt(s.krippendorff_alpha), { num: true }),
        cell(pct(s.ambiguity), { num: true, title: "fraction of labelled voxels whose consensus is unsure" }),
        cell(s.flagged ? flaggedWithReasons(s.flag_reasons) : "", { title: s.flag_reasons || "" }),
        cell(link(`/review/${s.scan}/`, "Review", { className: "button small" })),
      ],
      { scan: s.scan },
    ),
  );
  fillBody($("scans-body"), rows, { empty: "No scan has a consensus yet.", columns: 8 });
  // The answer holds the least agreed scans only; say so when there are more (the CSV has all).
  let more = document.getElementById("scans-more");
  if (!more) {
    more = document.createElement("p");
    more.id = "scans-more";
    more.className = "muted small";
    $("scans-body").closest("table").after(more);
  }
  const hidden = data.totals.scans - data.scans.length;
  more.hidden = hidden <= 0;
  more.textContent =
    hidden > 0
      ? `The ${data.scans.length} least agreed of ${data.totals.scans} scans; the CSV lists all of them.`
      : "";
}

function renderLabels(data) {
  const rows = data.per_label.map((l) =>
    row(
      [
        cell(l.label_name),
        cell(String(l.pairs), { num: true }),
        cell(fmt(l.mean_dice), { num: true }),
        cell(fmt(l.mean_jaccard), { num: true }),
        cell(fmt(l.mean_hausdorff95, 2), { num: true }),
        cell(fmt(l.mean_assd, 2), { num: true }),
        cell(fmt(l.mean_surface_dice), { num: true }),
        cell(fmt(l.mean_fleiss_kappa), { num: true }),
        cell(fmt(l.mean_krippendorff_alpha), { num: true }),
      ],
      { label: l.label },
    ),
  );
  fillBody($("labels-body"), rows, { empty: "No label measured yet.", columns: 9 });
}

function renderRaters(data) {
  const head = row([
    cell("Rater", { tag: "th" }),
    cell("Scans", { tag: "th", num: true }),
    cell("Dice vs consensus", { tag: "th", num: true }),
    ...data.labels.map((l) => cell(`Dice ${l.name}`, { tag: "th", num: true })),
    cell("Sens.", { tag: "th", num: true, title: "mean sensitivity" }),
    cell("Spec.", { tag: "th", num: true, title: "mean specificity" }),
    cell("Below median", { tag: "th", num: true }),
  ]);
  $("raters-head").replaceChildren(head);
  const rows = data.per_rater.map((r) =>
    row(
      [
        cell(r.flagged ? badge(`${r.rater} ⚑`, "flag") : r.rater),
        cell(String(r.scans), { num: true }),
        cell(fmt(r.mean_dice_vs_consensus), { num: true }),
        ...data.labels.map((l) => cell(fmt(r[`dice_label_${l.value}`]), { num: true })),
        cell(fmt(r.mean_sensitivity), { num: true }),
        cell(fmt(r.mean_specificity), { num: true }),
        cell(fmt(r.below_median_by), { num: true }),
      ],
      { rater: r.rater, flagged: r.flagged },
    ),
  );
  fillBody($("raters-body"), rows, { empty: "No rater measured yet.", columns: 6 + data.labels.length });
}

function renderDownloads(projectId) {
  for (const a of document.querySelectorAll("a.csv[data-table]")) {
    a.href = leadApi.agreementCsvUrl(projectId, a.dataset.table);
    a.title = `Download "${TABLE_TITLES[a.dataset.table]}" as CSV`;
  }
  $("downloads").replaceChildren(
    ...AGREEMENT_TABLES.map((table) => {
      const li = document.createElement("li");
      const a = link(leadApi.agreementCsvUrl(projectId, table), `${TABLE_TITLES[table]} (${table}.csv)`, { download: true });
      a.dataset.table = table;
      li.append(a);
      return li;
    }),
  );
}

function renderSummary(data, flaggedScans) {
  // Counts and the mean come from the server's aggregates: the page never holds every pair.
  const totals = data.totals;
  $("summary").textContent =
    `${totals.scans} scan${totals.scans === 1 ? "" : "s"} with a consensus · ` +
    `${data.per_rater.length} raters · ${totals.pairs} scan-label-rater pairs compared · ` +
    `mean pairwise Dice ${fmt(totals.mean_pairwise_dice)} · ${flaggedScans.length} scan${flaggedScans.length === 1 ? "" : "s"} waiting for adjudication.`;
  const review = $("review-flagged");
  review.hidden = flaggedScans.length === 0;
  if (flaggedScans.length) {
    review.href = `/review/${flaggedScans[0].id}/`;
    review.textContent = `Review flagged scans (${flaggedScans.length})`;
  }
}

// --- start ---------------------------------------------------------------------------------

async function showDashboard(projectId) {
  let project;
  try {
    project = await api.project(projectId);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      showForbidden(`Project ${projectId} does not exist, or you are not a member of it.`);
      return;
    }
    throw error;
  }
  app.project = project;
  document.title = `Agreement · ${project.name} · mriannot`;
  $("simulated-notice").hidden = !project.is_simulated;
  let data;
  let flaggedScans;
  try {
    [data, flaggedScans] = await Promise.all([leadApi.agreement(projectId), leadApi.flaggedScans(projectId)]);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
      showForbidden(
        `You are ${project.my_role ? `an ${project.my_role}` : "not a lead"} in “${project.name}”. Raters are blinded to each other, ` +
          "so inter-rater agreement, other raters' labels and consensus results are shown to the project's leads and admins only. " +
          `(The server answered ${error.status}: ${error.message})`,
      );
      return;
    }
    throw error;
  }
  app.agreement = data;
  $("project-title").textContent = `Agreement · ${project.name}`;
  renderProjectNav(projectId, "dashboard", { projectName: project.name });
  $("exports-link").href = $("exports-button").href = `/exports/${projectId}/`;
  $("exports-link").hidden = false;
  $("dashboard").hidden = false; // visible before the charts are drawn, so they get their size
  $("empty-note").hidden = data.scans.length > 0;
  renderSummary(data, flaggedScans);
  renderRaterFlags(data);
  renderHeatMap(data);
  renderRaterChart(data);
  renderTimeChart(data);
  renderScans(data);
  renderLabels(data);
  renderRaters(data);
  renderBreakdown($("by-metadata"), data.by_metadata, data.labels, { empty: "No scan has a consensus yet." });
  renderDownloads(projectId);
  await Promise.all([showModels(project), showQueues()]);
  markReady();
}

async function main() {
  const me = await requireUser();
  showUser(me);
  const projectId = idFromPath("dashboard");
  if (projectId === null) await showChooser(me);
  else await showDashboard(projectId);
}

runPage(main);
