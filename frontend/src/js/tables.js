// Small helpers for the lead pages' tables: number formatting and DOM cells.

/** A number with ``digits`` decimals, or an en dash when there is none (null, NaN, infinite). */
export function fmt(value, digits = 3) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  const text = value.toFixed(digits);
  return /^-0\.?0*$/.test(text) ? text.slice(1) : text; // no "-0.000"
}

/** A fraction as a percentage, e.g. 0.083 -> "8.3 %". */
export function pct(value, digits = 1) {
  return typeof value === "number" && Number.isFinite(value) ? `${(value * 100).toFixed(digits)} %` : "–";
}

/** A byte count for people, e.g. 95232 -> "93.0 KiB". */
export function humanSize(bytes) {
  if (typeof bytes !== "number") return "–";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/**
 * A table cell.
 * @param {string|number|Node|null} content text or a node
 * @param {object} [options]
 * @param {boolean} [options.num] right-aligned tabular number
 * @param {string} [options.className]
 * @param {string} [options.title]
 * @param {"td"|"th"} [options.tag]
 */
export function cell(content, { num = false, className = "", title = "", tag = "td" } = {}) {
  const element = document.createElement(tag);
  if (content instanceof Node) element.append(content);
  else element.textContent = content ?? "";
  if (num) element.classList.add("num");
  if (className) element.classList.add(...className.split(" ").filter(Boolean));
  if (title) element.title = title;
  return element;
}

/** A table row from cells; ``data`` becomes data-* attributes. */
export function row(cells, data = {}) {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(data)) tr.dataset[key] = String(value);
  tr.append(...cells);
  return tr;
}

/** Replace a tbody's rows; with no rows, one row spanning ``columns`` says ``empty``. */
export function fillBody(tbody, rows, { empty = "Nothing yet.", columns = 1 } = {}) {
  if (rows.length) {
    tbody.replaceChildren(...rows);
    return;
  }
  const td = cell(empty, { className: "muted" });
  td.colSpan = columns;
  tbody.replaceChildren(row([td]));
}

/** A link element. */
export function link(href, text, { className = "", download = false } = {}) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  if (className) a.className = className;
  if (download) a.setAttribute("download", "");
  return a;
}

/** A small coloured badge. */
export function badge(text, kind = "") {
  const span = document.createElement("span");
  span.className = `badge ${kind}`.trim();
  span.textContent = text;
  return span;
}
