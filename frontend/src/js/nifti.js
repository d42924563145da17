// Just enough NIfTI-1 to turn the consensus posterior (a 4-D float32 volume: x, y, z, label
// channel) into a 3-D overlay NiiVue can show: the uncertainty 1 - max over channels, or one
// label's probability. The new volume keeps the posterior's header (grid, qform, sform), so it
// lands on the scan's voxels.

const HEADER_BYTES = 348;
const VOX_OFFSET = 352;
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
 * The posterior as one Float32Array per label channel.
 * @param {Uint8Array} raw plain NIfTI bytes of an (X, Y, Z, L) volume
 * @returns {{header: object, channels: Float32Array[], nvox: number}}
 */
export function readChannels(raw) {
  const header = readHeader(raw);
  const [nx, ny, nz, nl] = header.dims;
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

/** Per voxel, 1 - the largest posterior probability: 0 where the consensus is sure. */
export function uncertainty(channels, nvox) {
  const out = new Float32Array(nvox);
  for (let i = 0; i < nvox; i++) {
    let best = 0;
    for (const channel of channels) if (channel[i] > best) best = channel[i];
    out[i] = Math.max(0, 1 - best);
  }
  return out;
}

/**
 * A 3-D float32 NIfTI-1 (.nii) with the header of ``template`` (grid, qform, sform) and ``data``.
 * @param {Uint8Array} template plain NIfTI bytes whose first 3 dims match ``data``
 * @param {Float32Array} data x fastest
 * @returns {Uint8Array}
 */
export function float32Volume(template, data, { description = "" } = {}) {
  const header = readHeader(template);
  const little = header.little;
  const out = new Uint8Array(VOX_OFFSET + data.byteLength);
  out.set(template.subarray(0, HEADER_BYTES), 0);
  const dv = new DataView(out.buffer);
  dv.setInt16(40, 3, little); // dim[0]: three dimensions
  for (let i = 4; i <= 7; i++) dv.setInt16(40 + 2 * i, 1, little);
  dv.setInt16(68, 0, little); // intent_code: none
  dv.setInt16(70, DT_FLOAT32, little);
  dv.setInt16(72, 32, little); // bitpix
  dv.setFloat32(108, VOX_OFFSET, little);
  dv.setFloat32(112, 1, little); // scl_slope
  dv.setFloat32(116, 0, little); // scl_inter
  dv.setFloat32(124, 0, little); // cal_max
  dv.setFloat32(128, 0, little); // cal_min
  const descrip = new TextEncoder().encode(description.slice(0, 79));
  out.fill(0, 148, 228);
  out.set(descrip, 148);
  out.set([0x6e, 0x2b, 0x31, 0x00], 344); // magic "n+1": one file
  // bytes 348..351: no extension
  const values = new Float32Array(data);
  if (little) out.set(new Uint8Array(values.buffer), VOX_OFFSET);
  else for (let i = 0; i < values.length; i++) dv.setFloat32(VOX_OFFSET + 4 * i, values[i], false);
  return out;
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
