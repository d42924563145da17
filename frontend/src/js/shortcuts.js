// Keyboard shortcuts and the help overlay that lists them ('?').
//
// A binding is {keys: ["Ctrl+z"], group, description, run, display?}; ``display`` replaces
// the listed keys in the help (e.g. ["1 … 9"]). Key names: a lower-case letter or
// the character itself ("?", "[", "+"), or a named key ("ArrowUp", "Escape", "PageDown"),
// with "Ctrl+" (Ctrl or Cmd), "Alt+" and "Shift+" prefixes; Shift is implied by the
// character for symbols ("?" not "Shift+/").

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  if (target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  if (target instanceof HTMLInputElement) {
    return !["checkbox", "radio", "range", "button", "submit"].includes(target.type);
  }
  return false;
}

/** The binding name of a keydown event, e.g. "Ctrl+Shift+z", "?", "ArrowUp". */
export function keyName(event) {
  const parts = [];
  if (event.ctrlKey || event.metaKey) parts.push("Ctrl");
  if (event.altKey) parts.push("Alt");
  let key = event.key;
  if (key.length === 1) {
    const letter = /^[a-z]$/i.test(key);
    if (letter) {
      if (event.shiftKey) parts.push("Shift");
      key = key.toLowerCase();
    } else if (/^[0-9]$/.test(key) && event.shiftKey) {
      parts.push("Shift");
    }
    if (key === " ") key = "Space";
  } else if (event.shiftKey && !["Shift", "Control", "Alt", "Meta"].includes(key)) {
    parts.push("Shift");
  }
  parts.push(key);
  return parts.join("+");
}

/** How a key name is shown to people. */
export function displayKey(name) {
  return name
    .split("+")
    .map((part) =>
      ({ ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→", Escape: "Esc", PageUp: "PgUp", PageDown: "PgDn" })[part] ||
      (part.length === 1 ? part.toUpperCase() : part),
    )
    .join(" + ");
}

export class Shortcuts {
  /** @param {Array<{keys: string[], group: string, description: string, run: (e: KeyboardEvent) => void, whenDialogOpen?: boolean}>} bindings */
  constructor(bindings) {
    this.bindings = bindings;
    this.byKey = new Map();
    for (const binding of bindings) {
      for (const key of binding.keys) {
        if (this.byKey.has(key)) throw new Error(`Shortcut ${key} is bound twice`);
        this.byKey.set(key, binding);
      }
    }
    this.enabled = true;
  }

  /** Listen on the window, before NiiVue's canvas listeners see the key. */
  install() {
    window.addEventListener("keydown", (event) => this.handle(event), { capture: true });
  }

  handle(event) {
    if (!this.enabled || event.isComposing) return;
    const name = keyName(event);
    const binding = this.byKey.get(name);
    if (!binding) return;
    const dialogOpen = document.querySelector("dialog[open]") !== null;
    if (dialogOpen && !binding.whenDialogOpen) return;
    if (isTyping(event.target) && name !== "Escape" && name !== "Ctrl+s") return;
    event.preventDefault();
    event.stopPropagation();
    binding.run(event);
  }

  /** Fill the help overlay: one table per group. */
  renderHelp(container) {
    const groups = new Map();
    for (const binding of this.bindings) {
      if (!groups.has(binding.group)) groups.set(binding.group, []);
      groups.get(binding.group).push(binding);
    }
    const sections = [];
    for (const [group, bindings] of groups) {
      const section = document.createElement("section");
      const h = document.createElement("h3");
      h.textContent = group;
      const table = document.createElement("table");
      for (const binding of bindings) {
        const tr = document.createElement("tr");
        const keys = document.createElement("td");
        keys.className = "keys";
        (binding.display || binding.keys.map(displayKey)).forEach((text, i) => {
          if (i) keys.append(" or ");
          const kbd = document.createElement("kbd");
          kbd.textContent = text;
          keys.append(kbd);
        });
        const what = document.createElement("td");
        what.textContent = binding.description;
        tr.append(keys, what);
        table.append(tr);
      }
      section.append(h, table);
      sections.push(section);
    }
    container.replaceChildren(...sections);
  }
}
