import { describe, expect, it } from "vitest";
import {
  divergingScale,
  extent,
  isDark,
  maxAbs,
  parseColor,
  rampEnds,
  sequentialScale,
} from "../src/lib/colors.js";

const distance = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

describe("parseColor", () => {
  it("reads hex, rgb and rgba in both syntaxes", () => {
    expect(parseColor("#fff")).toEqual([255, 255, 255, 1]);
    expect(parseColor("#1e1e1e")).toEqual([30, 30, 30, 1]);
    expect(parseColor(" rgb(10, 20, 30) ")).toEqual([10, 20, 30, 1]);
    expect(parseColor("rgba(10, 20, 30, 0.5)")).toEqual([10, 20, 30, 0.5]);
    expect(parseColor("rgb(10 20 30 / 0)")).toEqual([10, 20, 30, 0]);
    expect(parseColor("transparent")[3]).toBe(0);
  });
  it("returns null for what it cannot read", () => {
    expect(parseColor("var(--jp-layout-color0)")).toBeNull();
    expect(parseColor("")).toBeNull();
    expect(parseColor(undefined)).toBeNull();
    expect(parseColor("#12345")).toBeNull();
  });
});

describe("theme detection", () => {
  it("calls dark backgrounds dark and light ones light", () => {
    expect(isDark([17, 17, 17])).toBe(true);
    expect(isDark([30, 30, 30])).toBe(true);
    expect(isDark([255, 255, 255])).toBe(false);
    expect(isDark([240, 240, 240])).toBe(false);
  });
  it("picks brighter ramp ends on dark backgrounds", () => {
    const sum = (c) => c[0] + c[1] + c[2];
    expect(sum(rampEnds(true).strong)).toBeGreaterThan(sum(rampEnds(false).strong));
    expect(sum(rampEnds(true).positive)).toBeGreaterThan(sum(rampEnds(false).positive));
  });
});

describe("divergingScale", () => {
  const ends = { background: [255, 255, 255], negative: [0, 0, 200], positive: [200, 0, 0] };

  it("maps 0 to the background and the extremes to the ramp ends", () => {
    const scale = divergingScale(2, ends);
    expect(scale.color(0)).toEqual([255, 255, 255]);
    expect(scale.color(2)).toEqual([200, 0, 0]);
    expect(scale.color(-2)).toEqual([0, 0, 200]);
  });

  it("is symmetric around 0", () => {
    const scale = divergingScale(3, ends);
    for (const v of [0.1, 0.75, 1.5, 2.9]) {
      const pos = scale.color(v);
      const neg = scale.color(-v);
      expect(distance(pos, ends.background)).toBeCloseTo(distance(neg, ends.background), 0);
      expect(pos[0]).toBeGreaterThan(pos[2]); // reddish
      expect(neg[2]).toBeGreaterThan(neg[0]); // bluish
      expect(scale.index(v) - 128).toBe(128 - scale.index(-v));
    }
  });

  it("clamps beyond the range and survives an all-zero range", () => {
    const scale = divergingScale(1, ends);
    expect(scale.color(50)).toEqual(scale.color(1));
    expect(scale.color(-50)).toEqual(scale.color(-1));
    expect(divergingScale(0, ends).color(0)).toEqual([255, 255, 255]);
    expect(scale.color(Number.NaN)).toEqual(scale.nan);
  });

  it("grows monotonically away from the background", () => {
    const scale = divergingScale(1, ends);
    let last = -1;
    for (let v = 0; v <= 1; v += 0.05) {
      const d = distance(scale.color(v), ends.background);
      expect(d).toBeGreaterThanOrEqual(last);
      last = d;
    }
  });
});

describe("sequentialScale", () => {
  it("runs from the background at lo to the strong colour at hi", () => {
    const scale = sequentialScale(0, 1, { background: [0, 0, 0], strong: [255, 200, 100] });
    expect(scale.color(0)).toEqual([0, 0, 0]);
    expect(scale.color(1)).toEqual([255, 200, 100]);
    expect(scale.color(-1)).toEqual([0, 0, 0]);
    expect(scale.color(0.5)[0]).toBeGreaterThan(100);
    expect(scale.color(0.5)[0]).toBeLessThan(155);
  });
});

describe("extent and maxAbs", () => {
  it("skip NaN and infinities", () => {
    const data = new Float32Array([1, -3, Number.NaN, 2, Number.POSITIVE_INFINITY]);
    expect(extent(data)).toEqual([-3, 2]);
    expect(maxAbs(data)).toBe(3);
    expect(extent(new Float32Array([Number.NaN]))).toEqual([Number.NaN, Number.NaN]);
    expect(maxAbs(new Float32Array(0))).toBe(0);
  });
  it("respect a sub-range", () => {
    const data = new Float32Array([100, 1, -2, 100]);
    expect(maxAbs(data, 1, 3)).toBe(2);
    expect(extent(data, 1, 3)).toEqual([-2, 1]);
  });
});
