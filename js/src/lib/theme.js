/**
 * The colours a canvas should use, read from the widget root as the browser
 * resolved them (JupyterLab / VS Code CSS variables, or the fallbacks in
 * base.css), and a watcher that calls back when the notebook theme changes.
 */
import { isDark, parseColor, rampEnds } from "./colors.js";

const LIGHT = { background: [255, 255, 255], foreground: [34, 34, 34] };
const DARK = { background: [30, 30, 30], foreground: [220, 220, 220] };

/** "dark" | "light" | null from the markers JupyterLab and VS Code put on <body>. */
export function themeHint(doc) {
  const body = doc?.body;
  if (!body) return null;
  const jp = body.dataset?.jpThemeLight;
  if (jp === "false") return "dark";
  if (jp === "true") return "light";
  const cls = body.classList;
  if (cls.contains("vscode-dark") || cls.contains("vscode-high-contrast")) return "dark";
  if (cls.contains("vscode-light") || cls.contains("vscode-high-contrast-light")) return "light";
  return null;
}

function opaqueBackground(el) {
  const view = el.ownerDocument?.defaultView;
  if (!view) return null;
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const c = parseColor(view.getComputedStyle(node).backgroundColor);
    if (c && c[3] > 0.5) return c.slice(0, 3);
  }
  return null;
}

/** { background, foreground, muted, dark, negative, positive, strong, font, monoFont }. */
export function resolveTheme(el) {
  const hint = themeHint(el.ownerDocument);
  const defaults = hint === "dark" ? DARK : LIGHT;
  const background = opaqueBackground(el) ?? defaults.background;
  const dark = isDark(background);
  const view = el.ownerDocument?.defaultView;
  const style = view ? view.getComputedStyle(el) : null;
  const fg = parseColor(style?.color);
  const foreground = fg && fg[3] > 0.5 ? fg.slice(0, 3) : dark ? DARK.foreground : LIGHT.foreground;
  return {
    background,
    foreground,
    dark,
    ...rampEnds(dark),
    font: style?.fontFamily || "sans-serif",
  };
}

/** Call `callback` when the page theme may have changed; returns a stop function. */
export function watchTheme(el, callback) {
  const doc = el.ownerDocument;
  const view = doc?.defaultView;
  const stops = [];
  if (view?.MutationObserver && doc.body) {
    const observer = new view.MutationObserver(callback);
    const options = {
      attributes: true,
      attributeFilter: ["class", "data-jp-theme-light", "style"],
    };
    observer.observe(doc.body, options);
    observer.observe(doc.documentElement, options);
    stops.push(() => observer.disconnect());
  }
  const media = view?.matchMedia?.("(prefers-color-scheme: dark)");
  if (media?.addEventListener) {
    media.addEventListener("change", callback);
    stops.push(() => media.removeEventListener("change", callback));
  }
  return () => {
    for (const stop of stops) stop();
  };
}
