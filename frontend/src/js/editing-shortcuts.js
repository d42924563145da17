// The editing and view shortcuts that every page with the annotation tools shares (the
// viewer and the review page's edit of a consensus), with 3D Slicer / ITK-SNAP habits where
// they exist. This is the single list of editing keys: the help overlay is built from it. A
// page passes the tools (and the server operations) it offers; keys of tools it lacks stay
// unbound.

/** [tool, keys, description], in the order the help lists them. */
const TOOL_KEYS = [
  ["navigate", ["Escape"], "Navigate (crosshair) tool; rejects a preview"],
  ["brush", ["b"], "Brush (round in the slice, or sphere)"],
  ["pen", ["p"], "Filled pen (outline, filled on release)"],
  ["eraser", ["e"], "Eraser (round or sphere)"],
  ["fill2d", ["f"], "Fill in the slice (intensity range)"],
  ["fill3d", ["Shift+f"], "Fill in 3D (intensity range)"],
  ["ruler", ["Shift+r"], "Ruler: drag to measure a distance in mm"],
  ["wlregion", ["Shift+w"], "Window/level from a rectangle you drag"],
];

/** [action, keys, description, run(tools, operations)]: settings and whole-volume edits. */
const ACTION_KEYS = [
  ["shape", ["Shift+b"], "Brush shape: round (disc in the slice) / sphere (3D)", (tools) => tools.toggleShape()],
  ["threshold", ["t"], "Threshold painting on / off (the brush paints only the intensity range)", (tools) => tools.toggleThreshold()],
  ["sample", ["Shift+t"], "Intensity range from the voxel under the crosshair", (tools) => tools.rangeFromCrosshair()],
  ["interpolate", ["i"], "Fill between slices (preview)", (tools) => tools.interpolate()],
  ["accept", ["Enter"], "Accept the preview", (tools) => tools.acceptPreview()],
  ["lock", ["Shift+l"], "Lock / unlock the selected label (no tool overwrites it)", (tools) => tools.toggleLock()],
  ["hide", ["h"], "Show / hide the selected label", (tools) => tools.viewer.setLabelDisplay(tools.label, { visible: !tools.viewer.labelDisplay.get(tools.label)?.visible })],
  ["outside", ["0"], "Outside seed for grow from seeds (never saved)", (tools) => tools.setLabel(tools.labelForKey(0))],
  ["growSeeds", ["g"], "Grow from seeds (server, preview)", (_, ops) => ops.growFromSeeds()],
  ["removeSmall", ["x"], "Remove islands smaller than the size set (server)", (_, ops) => ops.removeSmallIslands()],
  ["keepLargest", ["Shift+x"], "Keep the largest island (server)", (_, ops) => ops.keepLargestIsland()],
  ["keepAt", ["k"], "Keep the island under the crosshair (server)", (_, ops) => ops.keepIslandAtCrosshair()],
  ["marginGrow", [">"], "Grow the selected label by the margin in mm (server)", (_, ops) => ops.margin(1)],
  ["marginShrink", ["<"], "Shrink the selected label by the margin in mm (server)", (_, ops) => ops.margin(-1)],
  ["smooth", ["Shift+s"], "Smooth the selected label (server)", (_, ops) => ops.smooth()],
];

/** Actions that need the server's operations. */
const SERVER_ACTIONS = new Set(["growSeeds", "removeSmall", "keepLargest", "keepAt", "marginGrow", "marginShrink", "smooth", "outside"]);

const VIEW_KEYS = [
  ["multiplanar", "m", "Multiplanar (three planes and 3D)"],
  ["axial", "a", "Axial"],
  ["coronal", "c", "Coronal"],
  ["sagittal", "s", "Sagittal"],
];

/** Every tool and action name (the viewer offers them all). */
export const ALL_EDITING = [...TOOL_KEYS.map(([tool]) => tool), ...ACTION_KEYS.map(([action]) => action)];

/**
 * Undo, redo, the tools, the brush size, and the actions the page offers.
 * @param {import("./tools.js").Tools} tools
 * @param {{offered?: string[], active?: () => boolean, operations?: import("./operations.js").Operations|null}} options
 *   `offered`: the tools and actions the page has (default: the tools of the first six, as
 *   before, plus the brush shape); `active`: whether editing is possible now (the keys do
 *   nothing if not); `operations`: the server operations (their keys are bound only with it).
 */
export function editingBindings(tools, { offered = ["navigate", "brush", "pen", "eraser", "fill2d", "fill3d", "shape"], active = () => true, operations = null } = {}) {
  const when = (action) => () => {
    if (active()) action();
  };
  const bindings = [
    { keys: ["Ctrl+z"], group: "Editing", description: "Undo (rejects a preview)", run: when(() => tools.undo()) },
    { keys: ["Ctrl+y", "Ctrl+Shift+z"], group: "Editing", description: "Redo", run: when(() => tools.redo()) },
    ...TOOL_KEYS.filter(([tool]) => offered.includes(tool)).map(([tool, keys, description]) => ({
      keys,
      group: "Tools",
      description,
      run:
        tool === "navigate"
          ? when(() => {
              if (!tools.rejectPreview()) tools.setTool(tool);
            })
          : when(() => tools.setTool(tool)),
    })),
    { keys: ["["], group: "Tools", description: "Smaller brush (size in mm on screen)", run: when(() => tools.stepBrush(-1)) },
    { keys: ["]"], group: "Tools", description: "Larger brush", run: when(() => tools.stepBrush(1)) },
  ];
  for (const [action, keys, description, run] of ACTION_KEYS) {
    if (!offered.includes(action)) continue;
    if (SERVER_ACTIONS.has(action) && !operations) continue;
    const group = SERVER_ACTIONS.has(action) ? "Clean-up and grow (server)" : action === "hide" || action === "lock" ? "Labels" : "Tools";
    bindings.push({
      keys,
      group,
      description,
      run: when(() => {
        if (action === "accept" && !tools.pending) {
          // Enter without a preview keeps its usual meaning on a focused button
          const focused = document.activeElement;
          if (focused instanceof HTMLButtonElement) focused.click();
          return;
        }
        run(tools, operations);
      }),
    });
  }
  return bindings;
}

/** The four slice layouts. @param {import("./viewer.js").Viewer} viewer */
export function viewBindings(viewer) {
  return VIEW_KEYS.map(([view, key, description]) => ({ keys: [key], group: "Views", description, run: () => viewer.setView(view) }));
}

/**
 * The scan's sequences (T1w, FLAIR, …): Shift+C shows the next one as the background (C alone
 * is the coronal view). None with a single sequence.
 * @param {import("./channels.js").Channels} channels
 */
export function channelBindings(channels) {
  if (!channels?.several) return [];
  return [
    {
      keys: ["Shift+c"],
      group: "Views",
      description: "Next sequence as the background (T1w, FLAIR, …)",
      run: () => channels.cycleBackground().catch((error) => channels.onMessage(error.message)),
    },
  ];
}
