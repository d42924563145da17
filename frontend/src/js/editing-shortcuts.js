// The editing and view shortcuts that every page with the annotation tools shares (the
// viewer and the review page's edit of a consensus), with 3D Slicer / ITK-SNAP habits where
// they exist. A page passes the tools it offers; keys of tools it lacks stay unbound.

/** [tool, keys, description], in the order the help lists them. */
const TOOL_KEYS = [
  ["navigate", ["Escape"], "Navigate (crosshair) tool"],
  ["brush", ["b"], "Brush"],
  ["pen", ["p"], "Filled pen (outline, filled on release)"],
  ["eraser", ["e"], "Eraser"],
  ["fill2d", ["f"], "Fill in the slice (intensity range)"],
  ["fill3d", ["Shift+f"], "Fill in 3D (intensity range)"],
];

const VIEW_KEYS = [
  ["multiplanar", "m", "Multiplanar (three planes and 3D)"],
  ["axial", "a", "Axial"],
  ["coronal", "c", "Coronal"],
  ["sagittal", "s", "Sagittal"],
];

/**
 * Undo, redo, the tools and the brush size.
 * @param {import("./tools.js").Tools} tools
 * @param {{offered?: string[], active?: () => boolean}} options `offered`: the tools the page
 *   has (default all); `active`: whether editing is possible now (the keys do nothing if not).
 */
export function editingBindings(tools, { offered = TOOL_KEYS.map(([tool]) => tool), active = () => true } = {}) {
  const when = (action) => () => {
    if (active()) action();
  };
  return [
    { keys: ["Ctrl+z"], group: "Editing", description: "Undo", run: when(() => tools.undo()) },
    { keys: ["Ctrl+y", "Ctrl+Shift+z"], group: "Editing", description: "Redo", run: when(() => tools.redo()) },
    ...TOOL_KEYS.filter(([tool]) => offered.includes(tool)).map(([tool, keys, description]) => ({
      keys,
      group: "Tools",
      description,
      run: when(() => tools.setTool(tool)),
    })),
    { keys: ["["], group: "Tools", description: "Smaller brush", run: when(() => tools.setPenSize(tools.penSize - 1)) },
    { keys: ["]"], group: "Tools", description: "Larger brush", run: when(() => tools.setPenSize(tools.penSize + 1)) },
  ];
}

/** The four slice layouts. @param {import("./viewer.js").Viewer} viewer */
export function viewBindings(viewer) {
  return VIEW_KEYS.map(([view, key, description]) => ({ keys: [key], group: "Views", description, run: () => viewer.setView(view) }));
}
