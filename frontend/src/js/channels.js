// Several sequences of one scan (T1w, FLAIR, …), co-registered on the scan's grid: which one
// NiiVue shows as the background, which one (if any) on top of it with an opacity, each with its
// own window/level. Shared by the annotation viewer and the review page.
//
// NiiVue holds only what is shown: nv.volumes[0] is the background sequence and, when an overlay
// sequence is shown, nv.volumes[1] is that one (the review page's uncertainty comes after it).
// The other sequences wait as parsed NVImages, so each keeps its own cal_min/cal_max (its
// window/level) while hidden and has it back when shown again. A swap is NiiVue's addVolume,
// setVolume (to index 0: the background) and removeVolume, drawn as one frame.
//
// The labels are NiiVue's drawing bitmap on the scan's grid, which every sequence shares (the
// server puts them there): swapping volumes never touches it, and the labels are saved with the
// scan's own image header (Viewer.exportLabels). NiiVue 0.69 blends overlay volumes above the
// drawing; while an overlay sequence is shown, a slice shader that blends the drawing last keeps
// the labels on top (labelsOnTopShader).
import { NVImage } from "@niivue/niivue";
import { api } from "./api.js";
import { $ } from "./session.js";

const GRID_TOLERANCE_MM = 0.01; // as the server's labeling/channels.py

/**
 * One sequence of the scan.
 * @typedef {{role: string, reference: boolean, present: boolean, resampled: boolean,
 *   coverage: number|null, image: import("@niivue/niivue").NVImage|null, loading: Promise|null,
 *   error: string|null, preset: string}} Channel
 */

export class Channels {
  /**
   * @param {import("./viewer.js").Viewer} viewer
   * @param {{onMessage?: (text: string) => void}} [options]
   */
  constructor(viewer, { onMessage = () => {} } = {}) {
    this.viewer = viewer;
    this.onMessage = onMessage;
    /** @type {Channel[]} */
    this.list = [];
    this.scanId = null;
    this.background = null; // the role shown as the background
    this.overlay = null; // the role shown on top of it, or null
    this.overlayOpacity = 0.5;
    this.listeners = [];
    this.queue = Promise.resolve(); // changes run one after the other
    this.shader = undefined; // the labels-on-top slice shader: undefined until first needed, null if unavailable
  }

  /**
   * The scan's sequences from the server. One (the scan's own image) when the server lists none
   * or cannot be asked: the page then works as with a single image.
   */
  async fetchList(scanId) {
    this.scanId = scanId;
    try {
      return await api.scanChannels(scanId);
    } catch (error) {
      console.warn("The scan's sequences could not be listed:", error);
      return null;
    }
  }

  /**
   * Take the list once the viewer shows the scan's own image (viewer.reference), and start
   * loading the other present sequences (in the background: the first frame does not wait).
   * @param {Array|null} rows the answer of GET /api/v1/scans/<id>/channels/
   */
  start(rows) {
    const reference = this.viewer.reference;
    const listed = Array.isArray(rows) && rows.some((row) => row.reference) ? rows : [{ role: "scan", reference: true, present: true }];
    this.list = listed.map((row) => ({
      role: row.role,
      reference: Boolean(row.reference),
      present: Boolean(row.present),
      resampled: Boolean(row.resampled),
      coverage: row.coverage ?? null,
      image: row.reference ? reference : null,
      loading: null,
      error: null,
      preset: "auto",
    }));
    this.background = this.list.find((c) => c.reference).role;
    this.overlay = null;
    document.body.dataset.channelBackground = this.background;
    document.body.dataset.channelOverlay = "";
    document.body.dataset.channels = "loading";
    const others = this.list.filter((c) => c.present && !c.reference);
    this.loaded = Promise.allSettled(others.map((c) => this.ensure(c))).then(() => {
      document.body.dataset.channels = others.some((c) => c.error) ? "partial" : "ready";
      this.emit();
    });
    this.emit();
    return this.loaded;
  }

  /** Whether there is more than one sequence to choose from (declared or present). */
  get several() {
    return this.list.length > 1;
  }

  get(role) {
    return this.list.find((c) => c.role === role) ?? null;
  }

  /** The role of a NiiVue volume, or null for one that is no sequence (the review's uncertainty). */
  roleOf(image) {
    return this.list.find((c) => c.image === image)?.role ?? null;
  }

  on(callback) {
    this.listeners.push(callback);
  }

  emit() {
    for (const callback of this.listeners) callback(this);
  }

  /** The sequence's NVImage, fetched and parsed once. */
  ensure(channel) {
    if (channel.image) return Promise.resolve(channel.image);
    if (!channel.present) return Promise.resolve(null);
    if (!channel.loading) {
      channel.loading = (async () => {
        try {
          const buffer = await api.scanChannelImage(this.scanId, channel.role);
          const image = await NVImage.loadFromUrl({ url: `${channel.role}.nii.gz`, name: `${channel.role}.nii.gz`, buffer });
          checkSameGrid(image, this.viewer.reference, channel.role);
          channel.image = image;
        } catch (error) {
          channel.error = error.message || String(error);
          this.onMessage(`The ${channel.role} sequence could not be loaded: ${channel.error}`);
        } finally {
          channel.loading = null;
          this.emit();
        }
        return channel.image;
      })();
    }
    return channel.loading;
  }

  /** Run a change after the ones before it (each may wait for a sequence to load). */
  enqueue(change) {
    const run = this.queue.then(change);
    this.queue = run.catch(() => {});
    return run;
  }

  /** Show a sequence as the background (the window/level controls then act on it). */
  setBackground(role) {
    return this.enqueue(() => this.showBackground(role));
  }

  async showBackground(role) {
    const next = this.get(role);
    if (!next || role === this.background) return Boolean(next);
    if (!next.image) this.onMessage(`Loading the ${role} sequence…`);
    const image = await this.ensure(next);
    if (!image) return false;
    const { viewer } = this;
    const { nv } = viewer;
    const previous = this.get(this.background);
    previous.preset = viewer.preset;
    const wasOverlay = this.overlay === role;
    viewer.batch(() => {
      if (wasOverlay) this.useLabelsOnTopShader(false); // before the volume calls, which set its uniforms
      image.opacity = 1;
      if (!nv.volumes.includes(image)) nv.addVolume(image);
      nv.setVolume(image, 0);
      nv.removeVolume(previous.image);
    });
    if (wasOverlay) this.overlay = null;
    this.background = role;
    viewer.volume = image;
    viewer.preset = next.preset;
    viewer.emit("window", viewer.windowLevel());
    nv.createOnLocationChange();
    document.body.dataset.channelBackground = role;
    document.body.dataset.channelOverlay = this.overlay ?? "";
    this.onMessage(`Background: ${role}.`);
    this.emit();
    return true;
  }

  /** The next present sequence as the background (after the last: the first). */
  cycleBackground() {
    return this.enqueue(async () => {
      const usable = this.list.filter((c) => c.present && !c.error);
      if (usable.length < 2) {
        this.onMessage("This scan has no other sequence to show.");
        return false;
      }
      const at = usable.findIndex((c) => c.role === this.background);
      return this.showBackground(usable[(at + 1) % usable.length].role);
    });
  }

  /** Show a sequence on top of the background (null: none), at ``overlayOpacity``. */
  setOverlay(role) {
    return this.enqueue(() => this.showOverlay(role || null));
  }

  async showOverlay(role) {
    if (role === this.background) role = null;
    if (role === this.overlay) return true;
    const next = role ? this.get(role) : null;
    if (role && !next) return false;
    if (next && !next.image) this.onMessage(`Loading the ${role} sequence…`);
    const image = next ? await this.ensure(next) : null;
    if (next && !image) return false;
    const { nv } = this.viewer;
    const previous = this.overlay ? this.get(this.overlay) : null;
    this.viewer.batch(() => {
      this.useLabelsOnTopShader(Boolean(image)); // before the volume calls, which set its uniforms
      if (previous) nv.removeVolume(previous.image);
      if (image) {
        image.opacity = this.overlayOpacity;
        nv.addVolume(image);
        nv.setVolume(image, 1); // right above the background, below the review's uncertainty
      }
    });
    this.overlay = role;
    nv.createOnLocationChange();
    document.body.dataset.channelOverlay = role ?? "";
    this.emit();
    return true;
  }

  setOverlayOpacity(opacity) {
    this.overlayOpacity = Math.min(1, Math.max(0, opacity));
    const image = this.overlay ? this.get(this.overlay).image : null;
    const index = image ? this.viewer.nv.volumes.indexOf(image) : -1;
    if (index > 0) this.viewer.nv.setOpacity(index, this.overlayOpacity);
    this.emit();
  }

  /** What is shown, for the tests: each NiiVue volume's role, and each loaded sequence's window. */
  state() {
    const { nv } = this.viewer;
    return {
      roles: this.list.map((c) => c.role),
      present: this.list.filter((c) => c.present).map((c) => c.role),
      loaded: this.list.filter((c) => c.image).map((c) => c.role),
      background: this.background,
      overlay: this.overlay,
      overlayOpacity: this.overlayOpacity,
      shown: nv.volumes.map((v) => this.roleOf(v)),
      labelsOnTop: Boolean(this.shader) && nv.customSliceShader === this.shader,
      windows: Object.fromEntries(
        this.list.filter((c) => c.image).map((c) => [c.role, { min: c.image.cal_min, max: c.image.cal_max }]),
      ),
    };
  }

  /** Switch NiiVue's slice shader to the labels-on-top one (compiled once), or back to NiiVue's own. */
  useLabelsOnTopShader(on) {
    const { nv } = this.viewer;
    if (!on) {
      if (this.shader && nv.customSliceShader === this.shader) nv.customSliceShader = null;
      return;
    }
    if (this.shader === undefined) {
      this.shader = null;
      const source = nv.opts.is2DSliceShader || nv.opts.isV1SliceShader ? null : labelsOnTopShader(nv);
      if (source) {
        try {
          nv.setCustomSliceShader(source);
          this.shader = nv.customSliceShader;
        } catch (error) {
          console.warn("The labels-on-top slice shader did not compile:", error);
        }
      }
      if (!this.shader) console.warn("An overlay sequence is drawn above the labels (NiiVue's own slice shader).");
    }
    if (this.shader) nv.customSliceShader = this.shader;
  }
}

function checkSameGrid(image, reference, role) {
  const a = reference.dimsRAS;
  const b = image.dimsRAS;
  if (![1, 2, 3].every((i) => a[i] === b[i])) {
    throw new Error(`it is ${b.slice(1, 4).join("×")} voxels, the scan ${a.slice(1, 4).join("×")}`);
  }
  const A = reference.hdr.affine;
  const B = image.hdr.affine;
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 4; j++) {
      if (Math.abs(A[i][j] - B[i][j]) > GRID_TOLERANCE_MM) throw new Error(`${role} is not on the scan's grid (affine)`);
    }
  }
}

// NiiVue 0.69's slice shader ends (kFragSliceTail) by blending the drawing into the background,
// then the overlays above both. This tail blends the overlays first and the drawing last; the
// rest of the shader is NiiVue's own, read back from the compiled program.
const TAIL_START = "ocolor.a *= overlayAlpha;";
const LABELS_ON_TOP_TAIL = `ocolor.a *= overlayAlpha;
	vec4 pcolor = texture(paqd, texPos);
	if (pcolor.a > 0.0) {
		pcolor.a = paqdEaseAlpha(pcolor.a);
		if (pcolor.a > 0.0) {
			if (paqdUniforms[3] < 0.0)
				ocolor = blendRGBA(pcolor, ocolor);
			else
				ocolor = blendRGBA(ocolor, pcolor);
		}
	}
	if (!((backgroundMasksOverlays > 0) && (background.a == 0.0))) {
		float a = color.a + ocolor.a * (1.0 - color.a);
		if (a > 0.0) {
			color.rgb = mix(color.rgb, ocolor.rgb, ocolor.a / a);
			color.a = a;
		}
	}
	float drawV = texture(drawing, texPos).r;
	vec4 dcolor = drawColor(drawV, drawOpacity);
	if (dcolor.a > 0.0) {
		if (drawRimOpacity >= 0.0) {
			vec3 offsetX = dFdx(texPos);
			vec3 offsetY = dFdy(texPos);
			float L = texture(drawing, texPos - offsetX).r;
			float R = texture(drawing, texPos + offsetX).r;
			float T = texture(drawing, texPos - offsetY).r;
			float B = texture(drawing, texPos + offsetY).r;
			if (L != drawV || R != drawV || T != drawV || B != drawV)
				dcolor.a = drawRimOpacity;
		}
		color.rgb = mix(color.rgb, dcolor.rgb, dcolor.a);
		color.a = max(drawOpacity, color.a);
	}
}`;

/** NiiVue's slice shader source with the drawing blended last, or null if it is not the one expected. */
export function labelsOnTopShader(nv) {
  const gl = nv.gl;
  const program = nv.sliceMMShader?.program;
  if (!gl || !program) return null;
  const fragment = (gl.getAttachedShaders(program) || []).find((s) => gl.getShaderParameter(s, gl.SHADER_TYPE) === gl.FRAGMENT_SHADER);
  const source = fragment ? gl.getShaderSource(fragment) : null;
  const cut = source ? source.indexOf(TAIL_START) : -1;
  if (cut < 0) return null;
  const tail = source.slice(cut);
  const expected = ["drawColor(drawV, drawOpacity)", "paqdEaseAlpha(pcolor.a)", "color.rgb = mix(color.rgb, ocolor.rgb, ocolor.a / a)"];
  if (!expected.every((text) => tail.includes(text))) return null;
  return source.slice(0, cut) + LABELS_ON_TOP_TAIL;
}

/**
 * Fill and wire the page's sequence controls: #channel-controls with #channel-background,
 * #channel-overlay and #channel-opacity (+ #channel-opacity-value). Hidden with one sequence.
 * @param {Channels} channels
 * @param {{onError?: (error: Error) => void}} [options]
 */
export function wireChannelControls(channels, { onError = (error) => channels.onMessage(error.message) } = {}) {
  const box = $("channel-controls");
  box.hidden = !channels.several;
  if (!channels.several) return;
  const background = $("channel-background");
  const overlay = $("channel-overlay");
  const opacity = $("channel-opacity");
  const option = (value, text) => Object.assign(document.createElement("option"), { value, textContent: text });
  background.replaceChildren(...channels.list.map((c) => option(c.role, c.role)));
  overlay.replaceChildren(option("", "None"), ...channels.list.map((c) => option(c.role, c.role)));
  background.addEventListener("change", () => channels.setBackground(background.value).catch(onError));
  overlay.addEventListener("change", () => channels.setOverlay(overlay.value).catch(onError));
  opacity.addEventListener("input", () => channels.setOverlayOpacity(Number(opacity.value) / 100));

  const render = () => {
    for (const select of [background, overlay]) {
      for (const opt of select.options) {
        const c = channels.get(opt.value);
        if (!c) continue;
        let text = c.role;
        if (!c.present) text += " (missing)";
        else if (c.error) text += " (could not be loaded)";
        else if (!c.image) text += " (loading…)";
        else if (c.resampled) text += " (resampled)";
        opt.textContent = text;
        opt.disabled = !c.present || Boolean(c.error) || (select === overlay && c.role === channels.background);
        opt.title = c.reference ? "The scan's own image: the labels' grid" : c.resampled ? "Resampled onto the scan's grid" : "";
      }
    }
    background.value = channels.background;
    overlay.value = channels.overlay ?? "";
    opacity.disabled = !channels.overlay;
    const percent = Math.round(channels.overlayOpacity * 100);
    opacity.value = String(percent);
    $("channel-opacity-value").textContent = `${percent} %`;
  };
  channels.on(render);
  render();
}
