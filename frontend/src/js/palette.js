// The project's label schema as a palette: one button per label (colour, name, value, key 1-9),
// shared by the annotation viewer and the lead's review page. The viewer adds, per label, its
// live volume in mL, show/hide, lock and opacity (``controls``).

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
 * @param {object} [options]
 * @param {string} [options.emptyText] text shown when there are no labels
 * @param {{onVisible: (value: number, visible: boolean) => void, onLock: (value: number, locked: boolean) => void,
 *   onOpacity: (value: number, opacity: number) => void}|null} [options.controls] per-label show/hide,
 *   lock and opacity (with a volume read-out), or none
 */
export function renderPalette(list, labels, onPick, { emptyText = "No labels.", controls = null } = {}) {
  const items = labels.map((label, index) => {
    const key = labelKey(label, index);
    const li = document.createElement("li");
    li.dataset.value = String(label.value);
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
    if (controls) li.append(labelControls(label, controls));
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

function labelControls(label, { onVisible, onLock, onOpacity }) {
  const row = document.createElement("div");
  row.className = "label-controls";
  const volume = document.createElement("output");
  volume.className = "label-volume";
  volume.title = "Volume of this label";
  volume.textContent = "0 mL";
  const visible = document.createElement("input");
  visible.type = "checkbox";
  visible.checked = true;
  visible.className = "label-visible";
  visible.title = `Show ${label.name}`;
  visible.setAttribute("aria-label", `Show ${label.name}`);
  visible.addEventListener("change", () => onVisible(label.value, visible.checked));
  const lock = document.createElement("button");
  lock.type = "button";
  lock.className = "label-lock secondary small";
  lock.textContent = "Lock";
  lock.title = `Lock ${label.name}: no tool overwrites it`;
  lock.setAttribute("aria-pressed", "false");
  lock.addEventListener("click", () => onLock(label.value, lock.getAttribute("aria-pressed") !== "true"));
  const opacity = document.createElement("input");
  opacity.type = "range";
  opacity.min = "0";
  opacity.max = "100";
  opacity.step = "5";
  opacity.value = "100";
  opacity.className = "label-opacity";
  opacity.title = `Opacity of ${label.name}`;
  opacity.setAttribute("aria-label", `Opacity of ${label.name}`);
  opacity.addEventListener("input", () => onOpacity(label.value, Number(opacity.value) / 100));
  row.append(visible, volume, lock, opacity);
  return row;
}

/**
 * Show each label's volume, visibility, lock and opacity in the palette's controls.
 * @param {HTMLElement} list
 * @param {{volumes?: Map<number, string>, locked?: Set<number>, display?: Map<number, {visible: boolean, opacity: number}>}} state
 */
export function updatePalette(list, { volumes = new Map(), locked = new Set(), display = new Map() }) {
  for (const li of list.querySelectorAll("li[data-value]")) {
    const value = Number(li.dataset.value);
    const volume = li.querySelector(".label-volume");
    if (volume) volume.textContent = volumes.get(value) ?? "0 mL";
    const lock = li.querySelector(".label-lock");
    if (lock) {
      const on = locked.has(value);
      lock.setAttribute("aria-pressed", String(on));
      lock.textContent = on ? "Locked" : "Lock";
      li.classList.toggle("locked", on);
    }
    const shown = display.get(value);
    if (shown) {
      const visible = li.querySelector(".label-visible");
      if (visible) visible.checked = shown.visible;
      const opacity = li.querySelector(".label-opacity");
      if (opacity && document.activeElement !== opacity) opacity.value = String(Math.round(shown.opacity * 100));
      li.classList.toggle("hidden-label", !shown.visible);
    }
  }
}

/** Mark the button of ``value`` as the selected label. */
export function markPalette(list, value) {
  for (const button of list.querySelectorAll("button")) {
    button.classList.toggle("active", Number(button.dataset.value) === value);
  }
}
