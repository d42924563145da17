// Just enough NIfTI-1 to turn the consensus posterior (a 4-D float32 volume: x, y, z, label
// channel) into a 3-D overlay NiiVue can show: the uncertainty 1 - max over channels, or one
// label's probability. The new volume keeps the posterior's header (grid, qform, sform), so it
// lands on the scan's voxels.

const HEADER_BYTES = 348;
const DT_UINT8 = 2;
const DT_INT16 = 4;
const DT_INT32 = 8;
const DT_FLOAT32 = 16;
const DT_FLOAT64 = 64;

/** Plain bytes of a .nii or .nii.gz (gunzipped in the browser when needed). */
export async function gunzipIfNeeded(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (view[0] !== 0x1f || view[1] !== 0x8b) return view;
  const stream = new Blob([view]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The fields of a NIfTI-1 header this module needs.
 * @param {Uint8Array} raw plain (not gzipped) NIfTI-1 bytes
 */
export function readHeader(raw) {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let little = true;
  if (dv.getInt32(0, true) !== HEADER_BYTES) {
    if (dv.getInt32(0, false) !== HEADER_BYTES) throw new Error("Not a NIfTI-1 file (sizeof_hdr is not 348).");
    little = false;
  }
  const dims = [];
  const ndim = dv.getInt16(40, little);
  for (let i = 1; i <= 7; i++) dims.push(i <= ndim ? Math.max(1, dv.getInt16(40 + 2 * i, little)) : 1);
  const slope = dv.getFloat32(112, little);
  return {
    little,
    ndim,
    dims,
    datatype: dv.getInt16(70, little),
    voxOffset: Math.round(dv.getFloat32(108, little)),
    slope: slope === 0 || !Number.isFinite(slope) ? 1 : slope,
    inter: Number.isFinite(dv.getFloat32(116, little)) ? dv.getFloat32(116, little) : 0,
  };
}

function voxels(raw, header) {
  const count = header.dims.reduce((a, b) => a * b, 1);
  const start = raw.byteOffset + header.voxOffset;
  const buffer = raw.buffer.slice(start, start + count * { [DT_UINT8]: 1, [DT_INT16]: 2, [DT_INT32]: 4, [DT_FLOAT32]: 4, [DT_FLOAT64]: 8 }[header.datatype]);
  const array = {
    [DT_UINT8]: Uint8Array,
    [DT_INT16]: Int16Array,
    [DT_INT32]: Int32Array,
    [DT_FLOAT32]: Float32Array,
    [DT_FLOAT64]: Float64Array,
  }[header.datatype];
  if (!array) throw new Error(`NIfTI datatype ${header.datatype} is not supported here.`);
  if (!header.little && array.BYTES_PER_ELEMENT > 1) {
    const dv = new DataView(buffer);
    const out = new array(count);
    const get = { 2: "getInt16", 4: array === Float32Array ? "getFloat32" : "getInt32", 8: "getFloat64" }[array.BYTES_PER_ELEMENT];
    for (let i = 0; i < count; i++) out[i] = dv[get](i * array.BYTES_PER_ELEMENT, false);
    return out;
  }
  return new array(buffer);
}

/**
 * A volume as one Float32Array per channel (a 3-D volume has one).
 * @param {Uint8Array} raw plain NIfTI bytes of an (X, Y, Z) or (X, Y, Z, L) volume
 * @returns {{header: object, channels: Float32Array[], nvox: number}}
 */
export function readChannels(raw) {
  const header = readHeader(raw);
  const [nx, ny, nz] = header.dims;
  const nl = header.ndim >= 4 ? header.dims[3] : 1;
  const nvox = nx * ny * nz;
  const data = voxels(raw, header);
  const channels = [];
  for (let l = 0; l < nl; l++) {
    const channel = new Float32Array(nvox);
    const base = l * nvox;
    for (let i = 0; i < nvox; i++) channel[i] = data[base + i] * header.slope + header.inter;
    channels.push(channel);
  }
  return { header, channels, nvox };
}

/** Summary figures of a volume: maximum and the count of voxels above ``threshold``. */
export function summarise(data, threshold) {
  let max = 0;
  let above = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i] > max) max = data[i];
    if (data[i] > threshold) above += 1;
  }
  return { max, above };
}
