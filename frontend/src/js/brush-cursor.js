// The brush's size on screen: a circle of the brush's diameter in millimetres around the mouse,
// over the slice it is in (NiiVue's tile geometry gives the pixels per mm at the current zoom).

const PAINTING = new Set(["brush", "eraser"]);

/**
 * @param {HTMLElement} ring an absolutely positioned element inside the canvas's parent
 * @param {import("./viewer.js").Viewer} viewer
 * @param {import("./tools.js").Tools} tools
 */
export function wireBrushCursor(ring, viewer, tools) {
  const canvas = viewer.canvas;
  const hide = () => {
    ring.hidden = true;
  };
  canvas.addEventListener("mouseleave", hide);
  canvas.addEventListener("mousemove", (event) => {
    if (!PAINTING.has(tools.tool) || tools.readOnly || tools.pending) return hide();
    const nv = viewer.nv;
    const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const tile = (nv.screenSlices || []).find((s) => {
      const [l, t, w, h] = s.leftTopWidthHeight;
      return s.axCorSag <= 2 && s.fovMM?.length > 1 && x * dpr >= l && x * dpr <= l + w && y * dpr >= t && y * dpr <= t + h;
    });
    if (!tile) return hide();
    const pxPerMm = tile.leftTopWidthHeight[2] / Math.abs(tile.fovMM[0]) / dpr;
    const size = Math.max(4, tools.brushMm * pxPerMm);
    ring.hidden = false;
    ring.dataset.shape = tools.shape;
    ring.style.width = `${size}px`;
    ring.style.height = `${size}px`;
    ring.style.left = `${canvas.offsetLeft + x - size / 2}px`;
    ring.style.top = `${canvas.offsetTop + y - size / 2}px`;
  });
}
