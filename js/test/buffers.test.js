import { describe, expect, it } from "vitest";
import { decodeBytes, decodeTensor, product, toFloat32, toUint8 } from "../src/lib/buffers.js";
import { dataView } from "./helpers.js";

const values = [0.5, -1.25, 3, 1e-7];

describe("toFloat32", () => {
  it("decodes a DataView, an ArrayBuffer and a Float32Array alike", () => {
    const view = dataView(values);
    const expected = Float32Array.from(values);
    expect(toFloat32(view)).toEqual(expected);
    expect(toFloat32(view.buffer)).toEqual(expected);
    expect(toFloat32(Float32Array.from(values))).toEqual(expected);
    expect(toFloat32(new Uint8Array(view.buffer))).toEqual(expected);
    expect(toFloat32(values)).toEqual(expected);
  });

  it("honours the view's byte offset, aligned or not", () => {
    for (const pad of [4, 3]) {
      const buffer = new ArrayBuffer(pad + 8);
      const dv = new DataView(buffer);
      dv.setFloat32(pad, 7.5, true);
      dv.setFloat32(pad + 4, -2, true);
      expect(Array.from(toFloat32(new DataView(buffer, pad, 8)))).toEqual([7.5, -2]);
    }
  });

  it("reads nothing from null and rejects other objects", () => {
    expect(toFloat32(null).length).toBe(0);
    expect(() => toFloat32({})).toThrow(TypeError);
  });
});

describe("decodeTensor", () => {
  it("accepts data whose length matches the shape", () => {
    const { data, error } = decodeTensor(dataView([1, 2, 3, 4, 5, 6]), [1, 2, 3], 3);
    expect(error).toBeUndefined();
    expect(data[5]).toBe(6);
  });
  it("explains a mismatch instead of drawing garbage", () => {
    expect(decodeTensor(dataView([1, 2, 3]), [2, 2, 1], 3).error).toMatch(/3 floats.*needs 4/);
    expect(decodeTensor(dataView([1]), [1, 1], 3).error).toMatch(/3 dimensions/);
    expect(product([2, 3, 4])).toBe(24);
    expect(product([2, -1])).toBeNull();
  });
});

describe("toUint8 / decodeBytes", () => {
  it("reads bytes from a DataView, an ArrayBuffer, a Uint8Array or a list, honouring offsets", () => {
    const buffer = Uint8Array.from([9, 0, 128, 255, 7]).buffer;
    expect([...toUint8(new DataView(buffer, 1, 3))]).toEqual([0, 128, 255]);
    expect([...toUint8(buffer)]).toEqual([9, 0, 128, 255, 7]);
    expect([...toUint8(new Uint8Array(buffer, 2, 2))]).toEqual([128, 255]);
    expect([...toUint8([1, 2])]).toEqual([1, 2]);
    expect(toUint8(undefined).length).toBe(0);
    expect(() => toUint8("abc")).toThrow(TypeError);
  });

  it("checks the byte count against the shape, naming the trait", () => {
    const ok = decodeBytes(new Uint8Array(12), [3, 2, 2], 3, "thumbnails");
    expect(ok.error).toBeUndefined();
    expect(ok.data).toBeInstanceOf(Uint8Array);
    expect(decodeBytes(new Uint8Array(11), [3, 2, 2], 3, "thumbnails").error).toBe(
      "thumbnails hold 11 bytes but shape [3,2,2] needs 12",
    );
  });
});
