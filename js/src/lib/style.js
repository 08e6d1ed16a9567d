/**
 * Inject a stylesheet once per document (or per shadow root, for frontends that
 * render widgets inside one). `id` names the sheet so a second view, or a second
 * widget kind sharing the base sheet, does not add it again.
 */
export function injectStyle(el, id, css) {
  const root = el.getRootNode?.();
  const inShadow = root && root.nodeType === 11 && root.host;
  const doc = el.ownerDocument || document;
  const target = inShadow ? root : doc.head || doc.documentElement;
  for (const style of target.querySelectorAll("style[data-nnsight-style]")) {
    if (style.dataset.nnsightStyle === id) return style;
  }
  const style = doc.createElement("style");
  style.dataset.nnsightStyle = id;
  style.textContent = css;
  target.append(style);
  return style;
}
