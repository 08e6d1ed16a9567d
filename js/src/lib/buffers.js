/**
 * Decoding the float32 and uint8 buffers that binary traits carry. anywidget hands a
 * DataView; tests and other frontends may hand an ArrayBuffer, a typed array or a
 * plain list. Checks are by tag, not instanceof, so buffers from another realm
 * (an iframe, jsdom) are accepted too.
 */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function tag(value) {
  return Object.prototype.toString.call(value);
}

/** A Float32Array view (or copy) of little-endian float32 data in `value`. */
export function toFloat32(value) {
  if (value == null) return new Float32Array(0);
  if (tag(value) === "[object Float32Array]") return value;
  if (Array.isArray(value)) return Float32Array.from(value, Number);
  let buffer;
  let offset = 0;
  let length;
  const kind = tag(value);
  if (kind === "[object ArrayBuffer]" || kind === "[object SharedArrayBuffer]") {
    buffer = value;
    length = value.byteLength;
  } else if (ArrayBuffer.isView(value)) {
    buffer = value.buffer;
    offset = value.byteOffset;
    length = value.byteLength;
  } else {
    throw new TypeError(`expected a float32 buffer, got ${kind}`);
  }
  const count = Math.floor(length / 4);
  if (LITTLE_ENDIAN && offset % 4 === 0) return new Float32Array(buffer, offset, count);
  const view = new DataView(buffer, offset, length);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** Product of a shape's dimensions; null unless every entry is a non-negative integer. */
export function product(shape) {
  if (!Array.isArray(shape)) return null;
  let n = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) return null;
    n *= dim;
  }
  return n;
}

/** A Uint8Array view (or copy) of the bytes in `value`. */
export function toUint8(value) {
  if (value == null) return new Uint8Array(0);
  const kind = tag(value);
  if (kind === "[object Uint8Array]") return value;
  if (Array.isArray(value)) return Uint8Array.from(value, Number);
  if (kind === "[object ArrayBuffer]" || kind === "[object SharedArrayBuffer]") {
    return new Uint8Array(value);
  }
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError(`expected a byte buffer, got ${kind}`);
}

function decodeWith(toArray, unit, name, value, shape, rank) {
  if (!Array.isArray(shape) || shape.length !== rank) {
    return { error: `shape should list ${rank} dimensions, got ${JSON.stringify(shape)}` };
  }
  const expected = product(shape);
  if (expected == null) return { error: `shape ${JSON.stringify(shape)} is not valid` };
  let data;
  try {
    data = toArray(value);
  } catch (err) {
    return { error: err.message };
  }
  if (data.length !== expected) {
    return {
      error: `${name} hold ${data.length} ${unit} but shape ${JSON.stringify(shape)} needs ${expected}`,
    };
  }
  return { data, shape };
}

/**
 * Decode float32 `value` and check it against `shape` of the given rank.
 * Returns { data, shape } or { error } with a sentence a person can act on.
 */
export function decodeTensor(value, shape, rank, name = "values") {
  return decodeWith(toFloat32, "floats", name, value, shape, rank);
}

/** decodeTensor for uint8 data: { data: Uint8Array, shape } or { error }. */
export function decodeBytes(value, shape, rank, name = "values") {
  return decodeWith(toUint8, "bytes", name, value, shape, rank);
}
