// Run-length coding of label bitmaps: a label volume is mostly long runs of one value, so a
// snapshot of a 1 mm brain (8.7 M voxels) takes kilobytes instead of megabytes.

/**
 * Encode a bitmap as runs.
 * @param {Uint8Array} bitmap
 * @returns {{length: number, values: Uint8Array, runs: Uint32Array}}
 */
export function rleEncode(bitmap) {
  const values = [];
  const runs = [];
  const n = bitmap.length;
  let i = 0;
  while (i < n) {
    const v = bitmap[i];
    let j = i + 1;
    while (j < n && bitmap[j] === v) j++;
    values.push(v);
    runs.push(j - i);
    i = j;
  }
  return { length: n, values: Uint8Array.from(values), runs: Uint32Array.from(runs) };
}

/**
 * Decode runs into ``target`` (same length as the encoded bitmap), or into a new array.
 * @param {{length: number, values: Uint8Array, runs: Uint32Array}} encoded
 * @param {Uint8Array} [target]
 * @returns {Uint8Array}
 */
export function rleDecode(encoded, target) {
  const out = target ?? new Uint8Array(encoded.length);
  if (out.length !== encoded.length) {
    throw new Error(`rleDecode: target holds ${out.length} voxels, the snapshot ${encoded.length}`);
  }
  let at = 0;
  for (let r = 0; r < encoded.runs.length; r++) {
    const end = at + encoded.runs[r];
    out.fill(encoded.values[r], at, end);
    at = end;
  }
  return out;
}
