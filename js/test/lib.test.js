import { afterEach, describe, expect, it, vi } from "vitest";
import { copyText } from "../src/lib/clipboard.js";
import { batched } from "../src/lib/model.js";
import { sparkline, sparklinePath } from "../src/lib/sparkline.js";
import { injectStyle } from "../src/lib/style.js";
import { resolveTheme, themeHint } from "../src/lib/theme.js";

afterEach(() => {
  document.head.replaceChildren();
  document.body.replaceChildren();
  document.body.removeAttribute("data-jp-theme-light");
  document.body.className = "";
  vi.unstubAllGlobals();
});

describe("injectStyle", () => {
  it("adds each sheet once per document", () => {
    const el = document.createElement("div");
    document.body.append(el);
    injectStyle(el, "base", ".a{}");
    injectStyle(el, "base", ".a{}");
    injectStyle(el, "tree", ".b{}");
    expect(document.head.querySelectorAll("style[data-nnsight-style]")).toHaveLength(2);
  });

  it("goes into a shadow root when the widget lives in one", () => {
    const host = document.createElement("div");
    document.body.append(host);
    const shadow = host.attachShadow({ mode: "open" });
    const el = document.createElement("div");
    shadow.append(el);
    injectStyle(el, "base", ".a{}");
    expect(shadow.querySelectorAll("style")).toHaveLength(1);
    expect(document.head.querySelectorAll("style")).toHaveLength(0);
  });
});

describe("theme", () => {
  it("reads JupyterLab's and VS Code's dark markers", () => {
    document.body.dataset.jpThemeLight = "false";
    expect(themeHint(document)).toBe("dark");
    document.body.dataset.jpThemeLight = "true";
    expect(themeHint(document)).toBe("light");
    document.body.removeAttribute("data-jp-theme-light");
    document.body.className = "vscode-dark";
    expect(themeHint(document)).toBe("dark");
    document.body.className = "";
    expect(themeHint(document)).toBeNull();
  });

  it("picks the dark ramp from a dark resolved background", () => {
    const el = document.createElement("div");
    el.style.backgroundColor = "rgb(20, 20, 24)";
    el.style.color = "rgb(230, 230, 230)";
    document.body.append(el);
    const theme = resolveTheme(el);
    expect(theme.dark).toBe(true);
    expect(theme.background).toEqual([20, 20, 24]);
    expect(theme.foreground).toEqual([230, 230, 230]);
    const light = document.createElement("div");
    light.style.backgroundColor = "#fafafa";
    document.body.append(light);
    expect(resolveTheme(light).dark).toBe(false);
    expect(resolveTheme(light).strong).not.toEqual(theme.strong);
  });

  it("falls back on the page's marker when no background resolves", () => {
    document.body.dataset.jpThemeLight = "false";
    const el = document.createElement("div");
    document.body.append(el);
    expect(resolveTheme(el).dark).toBe(true);
  });
});

describe("copyText", () => {
  it("uses the Clipboard API when there is one", async () => {
    const writeText = vi.fn(() => Promise.resolve());
    vi.stubGlobal("navigator", { clipboard: { writeText } });
    await expect(copyText("llm.lm_head")).resolves.toBe(true);
    expect(writeText).toHaveBeenCalledWith("llm.lm_head");
  });

  it("resolves false instead of throwing when nothing can copy", async () => {
    vi.stubGlobal("navigator", {});
    await expect(copyText("x")).resolves.toBe(false);
    vi.stubGlobal("navigator", { clipboard: { writeText: () => Promise.reject(new Error("no")) } });
    await expect(copyText("x")).resolves.toBe(false);
    expect(document.querySelector("textarea")).toBeNull();
  });
});

describe("sparkline", () => {
  it("draws one bar per non-empty bin, scaled to the tallest", () => {
    const d = sparklinePath([0, 2, 4], 30, 10);
    expect(d.match(/M/g)).toHaveLength(2);
    expect(d).toContain("v-10.00"); // the tallest bar fills the height
    expect(d).toContain("v-5.00");
    expect(sparklinePath([0, 0], 30, 10)).toBe("");
    const svg = sparkline([1, 2], { title: "hist" });
    expect(svg.getAttribute("class")).toBe("nnsight-sparkline");
    expect(svg.querySelector("title").textContent).toBe("hist");
  });
});

describe("batched", () => {
  it("runs once for several calls in one tick, and never after cancel", async () => {
    const fn = vi.fn();
    const schedule = batched(fn);
    schedule();
    schedule();
    schedule();
    await Promise.resolve();
    expect(fn).toHaveBeenCalledTimes(1);
    schedule();
    schedule.cancel();
    await Promise.resolve();
    expect(fn).toHaveBeenCalledTimes(1);
  });
});
