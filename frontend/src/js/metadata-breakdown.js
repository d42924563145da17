// A figure broken down by scan metadata: one small table per metadata column (site, scanner,
// field strength, sequence, sex, age band), a row per group with n (scans) and the mean Dice of
// each label. The dashboard shows inter-rater agreement this way, the model card validation Dice.
import { cell, fmt, row } from "./tables.js";

export const METADATA_TITLES = {
  site: "Site",
  scanner: "Scanner",
  field_strength: "Field strength",
  sequence: "Sequence",
  sex: "Sex",
  age_band: "Age band",
};

/**
 * Fill ``container`` with one table per metadata column.
 * @param {HTMLElement} container
 * @param {{column:string, group:string, label:number, scans:number, mean_dice:number|null}[]} rows
 * @param {{value:number, name:string}[]} labels the labels, in column order
 * @param {{empty?: string}} [options]
 */
export function renderBreakdown(container, rows, labels, { empty = "Nothing measured yet." } = {}) {
  if (!rows.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = empty;
    container.replaceChildren(p);
    return;
  }
  const shown = labels.filter((l) => rows.some((r) => r.label === l.value));
  const tables = Object.keys(METADATA_TITLES)
    .filter((column) => rows.some((r) => r.column === column))
    .map((column) => {
      const mine = rows.filter((r) => r.column === column);
      const groups = [...new Set(mine.map((r) => r.group))];
      const table = document.createElement("table");
      table.className = "data compact";
      table.dataset.column = column;
      const caption = document.createElement("caption");
      caption.textContent = METADATA_TITLES[column];
      const head = document.createElement("thead");
      head.append(
        row([
          cell(METADATA_TITLES[column], { tag: "th" }),
          cell("n", { tag: "th", num: true, title: "scans in the group with a figure" }),
          ...shown.map((l) => cell(`Dice ${l.name}`, { tag: "th", num: true })),
        ]),
      );
      const body = document.createElement("tbody");
      body.append(
        ...groups.map((group) => {
          const byLabel = new Map(mine.filter((r) => r.group === group).map((r) => [r.label, r]));
          const n = Math.max(...[...byLabel.values()].map((r) => r.scans));
          return row(
            [
              cell(group),
              cell(String(n), { num: true }),
              ...shown.map((l) => {
                const r = byLabel.get(l.value);
                return cell(fmt(r?.mean_dice), { num: true, title: r ? `n = ${r.scans} scans` : "not measured" });
              }),
            ],
            { group },
          );
        }),
      );
      table.append(caption, head, body);
      return table;
    });
  container.replaceChildren(...tables);
}
