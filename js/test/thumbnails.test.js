import { describe, expect, it } from "vitest";
import {
  blockSize,
  expandThumbnail,
  matchesThumbnail,
  thumbnailOf,
} from "../src/lib/thumbnails.js";

/** A q x k matrix from f(i, j). */
function matrix(q, k, f) {
  const out = new Float32Array(q * k);
  for (let i = 0; i < q; i++) for (let j = 0; j < k; j++) out[i * k + j] = f(i, j);
  return out;
}

describe("blockSize", () => {
  it("is ceil(count / cells)", () => {
    expect(blockSize(128, 64)).toBe(2);
    expect(blockSize(100, 50)).toBe(2);
    expect(blockSize(130, 44)).toBe(3);
    expect(blockSize(5, 5)).toBe(1);
  });
});

describe("thumbnailOf", () => {
  it("max-pools blocks of ceil(q / tq) x ceil(k / tk), the last ones smaller", () => {
    // 5 x 3 into 3 x 2: row blocks [0, 1] [2, 3] [4], column blocks [0, 1] [2]
    const values = matrix(5, 3, () => 0);
    values[1 * 3 + 1] = 0.2; // cell (0, 0)
    values[3 * 3 + 2] = 0.4; // cell (1, 1)
    values[4 * 3 + 0] = 0.1; // cell (2, 0): the last row block has one row
    const { bytes, nan } = thumbnailOf(values, 5, 3, 3, 2);
    expect(nan).toBe(false);
    expect([...bytes]).toEqual([128, 0, 0, 255, 64, 0]);
  });

  it("scales to the head's own max; negative weights read as 0; all-zero stays 0", () => {
    const values = Float32Array.from([-0.5, 0.01, 0.02, 0.005]);
    expect([...thumbnailOf(values, 2, 2, 2, 2).bytes]).toEqual([0, 128, 255, 64]);
    expect([...thumbnailOf(new Float32Array(4), 2, 2, 2, 2).bytes]).toEqual([0, 0, 0, 0]);
    expect(thumbnailOf(Float32Array.from([Number.NaN, 1]), 1, 2, 1, 2).nan).toBe(true);
  });

  it("pools 100 x 37 weights into 50 x 37 cells as the kernel does", () => {
    const values = matrix(100, 37, (i, j) => ((i * 37 + j) % 97) / 97);
    const { bytes } = thumbnailOf(values, 100, 37, 50, 37);
    const expected = Math.round((Math.max(values[0], values[37]) / (96 / 97)) * 255);
    expect(bytes[0]).toBe(expected);
    expect(Math.max(...bytes)).toBe(255);
  });
});

describe("expandThumbnail", () => {
  it("gives each weight the byte of the cell covering it", () => {
    // 2 heads of 3 x 2 cells for 5 x 3 weights: blocks of 2 rows, 2 columns
    const data = Uint8Array.from([...[0, 0, 0, 0, 0, 0], ...[1, 2, 3, 4, 5, 6]]);
    const out = expandThumbnail({ data, shape: [2, 3, 2] }, 1, 5, 3);
    expect([...out]).toEqual([1, 1, 2, 1, 1, 2, 3, 3, 4, 3, 3, 4, 5, 5, 6]);
  });
});

describe("matchesThumbnail", () => {
  const diagonal = matrix(4, 4, (i, j) => (i === j ? 0.9 : 0.1 * j));
  const first = matrix(4, 4, (_, j) => (j === 0 ? 1 : 0));
  const data = new Uint8Array(32);
  data.set(thumbnailOf(diagonal, 4, 4, 2, 2).bytes, 0);
  data.set(thumbnailOf(first, 4, 4, 2, 2).bytes, 4);
  const thumbs = { data, shape: [8, 2, 2] };

  it("tells which head the values are", () => {
    expect(matchesThumbnail(diagonal, 4, 4, thumbs, 0)).toBe(true);
    expect(matchesThumbnail(diagonal, 4, 4, thumbs, 1)).toBe(false);
    expect(matchesThumbnail(first, 4, 4, thumbs, 1)).toBe(true);
    expect(matchesThumbnail(first, 4, 4, thumbs, 0)).toBe(false);
  });

  it("allows rounding differences of a step or two, not more", () => {
    const nudged = { data: Uint8Array.from(data), shape: thumbs.shape };
    nudged.data[5] += 2;
    expect(matchesThumbnail(first, 4, 4, nudged, 1)).toBe(true);
    nudged.data[5] += 1;
    expect(matchesThumbnail(first, 4, 4, nudged, 1)).toBe(false);
  });

  it("accepts values with NaN, whose kernel thumbnail is undefined", () => {
    const broken = Float32Array.from(first);
    broken[3] = Number.NaN;
    expect(matchesThumbnail(broken, 4, 4, thumbs, 0)).toBe(true);
  });
});
