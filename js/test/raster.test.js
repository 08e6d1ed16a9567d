import { describe, expect, it } from "vitest";
import { axisPixels, cellAt, cellSize, MAX_CANVAS } from "../src/lib/canvas.js";
import { sequentialScale } from "../src/lib/colors.js";
import { rasterize, spans } from "../src/lib/raster.js";

const scale = sequentialScale(0, 1, {
  background: [255, 255, 255],
  strong: [0, 0, 0],
  nan: [255, 0, 255],
});
const rgb = (px, width, x, y) => [...px.slice((y * width + x) * 4, (y * width + x) * 4 + 3)];

describe("rasterize", () => {
  it("draws each cell as a block of pixels, row-major, first row on top", () => {
    // 2 x 3 matrix, 4 px cells
    const data = new Float32Array([0, 1, 0, 0, 0, Number.NaN]);
    const px = rasterize(data, 0, 2, 3, 12, 8, scale);
    expect(px.length).toBe(12 * 8 * 4);
    expect(rgb(px, 12, 0, 0)).toEqual([255, 255, 255]);
    expect(rgb(px, 12, 4, 0)).toEqual([0, 0, 0]);
    expect(rgb(px, 12, 7, 3)).toEqual([0, 0, 0]);
    expect(rgb(px, 12, 8, 3)).toEqual([255, 255, 255]);
    expect(rgb(px, 12, 4, 4)).toEqual([255, 255, 255]);
    expect(rgb(px, 12, 11, 7)).toEqual([255, 0, 255]); // NaN
    expect(px[3]).toBe(255);
  });

  it("reads from an offset (one head of many)", () => {
    const data = new Float32Array([1, 1, 1, 1, 0, 0, 0, 0]);
    const px = rasterize(data, 4, 2, 2, 2, 2, scale);
    expect(rgb(px, 2, 1, 1)).toEqual([255, 255, 255]);
  });

  it("keeps a single spike visible when pooling many cells into one pixel", () => {
    const n = 1000;
    const data = new Float32Array(n * n);
    data[537 * n + 412] = 1;
    const px = rasterize(data, 0, n, n, 100, 100, scale);
    expect(rgb(px, 100, 41, 53)).toEqual([0, 0, 0]);
    expect(rgb(px, 100, 40, 53)).toEqual([255, 255, 255]);
  });

  it("covers every cell exactly once across pixel spans", () => {
    for (const [count, pixels] of [
      [7, 3],
      [3, 7],
      [10, 10],
      [1000, 333],
    ]) {
      const { start, end } = spans(count, pixels);
      expect(start[0]).toBe(0);
      expect(end[pixels - 1]).toBe(count);
      for (let p = 0; p < pixels; p++) expect(end[p]).toBeGreaterThan(start[p]);
    }
  });
});

describe("canvas geometry", () => {
  it("sizes cells to a budget within bounds", () => {
    expect(cellSize(10, 560, 1, 32)).toBe(32);
    expect(cellSize(100, 560, 1, 32)).toBe(5);
    expect(cellSize(5000, 560, 1, 32)).toBe(1);
    expect(axisPixels(5000, 1)).toBe(MAX_CANVAS);
    expect(axisPixels(0, 4)).toBe(1);
  });

  it("maps pointer positions to cells through the displayed size", () => {
    const canvas = document.createElement("canvas");
    canvas.width = 100;
    canvas.height = 50;
    // displayed at twice the size, offset by (10, 20)
    canvas.getBoundingClientRect = () => ({ left: 10, top: 20, width: 200, height: 100 });
    expect(cellAt({ clientX: 10, clientY: 20 }, canvas, 5, 10)).toEqual({ row: 0, col: 0 });
    expect(cellAt({ clientX: 209, clientY: 119 }, canvas, 5, 10)).toEqual({ row: 4, col: 9 });
    expect(cellAt({ clientX: 110, clientY: 70 }, canvas, 5, 10)).toEqual({ row: 2, col: 5 });
    expect(cellAt({ clientX: 5, clientY: 30 }, canvas, 5, 10)).toBeNull();
    expect(cellAt({ clientX: 210, clientY: 30 }, canvas, 5, 10)).toBeNull();
  });
});
