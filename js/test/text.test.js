import { describe, expect, it } from "vitest";
import { formatShape, formatValue, humanCount } from "../src/lib/format.js";
import { showWhitespace, tokenLabel, truncate } from "../src/lib/tokens.js";

describe("showWhitespace", () => {
  it("makes spaces, newlines and tabs visible", () => {
    expect(showWhitespace(" the")).toBe("␣the");
    expect(showWhitespace("a\nb")).toBe("a↵b");
    expect(showWhitespace("\t x\r\n")).toBe("→␣x␍↵");
    expect(showWhitespace("plain")).toBe("plain");
  });
  it("never shows an empty token as nothing", () => {
    expect(showWhitespace("")).toBe("∅");
    expect(showWhitespace(null)).toBe("");
  });
  it("labels by index when there are no tokens", () => {
    expect(tokenLabel([], 3)).toBe("3");
    expect(tokenLabel([" a", "b"], 0)).toBe("␣a");
    expect(truncate("abcdefgh", 5)).toBe("abcd…");
    expect(truncate("abc", 5)).toBe("abc");
  });
});

describe("humanCount", () => {
  it("humanises parameter counts", () => {
    expect(humanCount(124439808)).toBe("124.4M");
    expect(humanCount(2400)).toBe("2.4K");
    expect(humanCount(999)).toBe("999");
    expect(humanCount(0)).toBe("0");
    expect(humanCount(7e9)).toBe("7.0B");
  });
  it("carries into the next unit instead of printing 1000.0K", () => {
    expect(humanCount(999960)).toBe("1.0M");
  });
});

describe("formatValue", () => {
  it("keeps four significant digits and switches to exponents at the extremes", () => {
    expect(formatValue(0.123456)).toBe("0.1235");
    expect(formatValue(-12.3456)).toBe("-12.35");
    expect(formatValue(0)).toBe("0");
    expect(formatValue(1234567)).toBe("1.235e+6");
    expect(formatValue(0.0000123)).toBe("1.230e-5");
    expect(formatValue(Number.NaN)).toBe("nan");
    expect(formatShape([1, 10, 768])).toBe("[1, 10, 768]");
  });
});
