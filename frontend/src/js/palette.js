// The project's label schema as a palette: one button per label (colour, name, value, key 1-9),
// shared by the annotation viewer and the lead's review page.

/**
 * The number key (1-9) of a label: the schema's own (set on the project's settings page), or,
 * for a schema from before keys existed (no ``key`` field), its position.
 * @param {{key?: number|null}} label
 * @param {number} index its position in the schema
 * @returns {number|null}
 */
export function labelKey(label, index) {
  if (label.key !== undefined) return label.key ?? null;
  return index < 9 ? index + 1 : null;
}

/**
 * Fill ``list`` with one button per label; clicking one calls ``onPick(value)``.
 * @param {HTMLElement} list the palette's <ul>
 * @param {{value: number, name: string, color: string, key?: number|null}[]} labels in value order
 * @param {(value: number) => void} onPick
 * @param {{emptyText?: string}} options text shown when there are no labels
 */
export function renderPalette(list, labels, onPick, { emptyText = "No labels." } = {}) {
  const items = labels.map((label, index) => {
    const key = labelKey(label, index);
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.value = String(label.value);
    button.title = key ? `${label.name} (key ${key})` : label.name;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = label.color;
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label.name;
    const meta = document.createElement("span");
    meta.className = "label-meta";
    meta.textContent = `${label.value}${key ? ` · key ${key}` : ""}`;
    button.append(swatch, name, meta);
    button.addEventListener("click", () => onPick(label.value));
    li.append(button);
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = emptyText;
    items.push(li);
  }
  list.replaceChildren(...items);
}

/** Mark the button of ``value`` as the selected label. */
export function markPalette(list, value) {
  for (const button of list.querySelectorAll("button")) {
    button.classList.toggle("active", Number(button.dataset.value) === value);
  }
}
