/** The root element every widget renders into, with the shared and its own stylesheet. */
import baseCss from "../styles/base.css?raw";
import { h, whenConnected } from "./dom.js";
import { injectStyle } from "./style.js";

/**
 * Append the root <div class="nnsight-widget CLASS"> to `el` and add the
 * stylesheets. When `el` is not in a document yet, the sheets are added again
 * once it is (so they land in the right shadow root) and `onAttach` runs (to
 * redraw canvases with the theme's real colours). Returns { root, stop }.
 */
export function mountRoot(el, className, css, onAttach) {
  const addStyles = () => {
    injectStyle(el, "base", baseCss);
    injectStyle(el, className, css);
  };
  addStyles();
  const root = h("div", { class: `nnsight-widget ${className}` });
  el.append(root);
  const stop = whenConnected(root, () => {
    addStyles();
    onAttach?.();
  });
  return { root, stop };
}

/**
 * A widget's cleanup: call every stop function (listeners, trait watchers, pending
 * draws), then remove the root.
 */
export function teardown(root, stops) {
  return () => {
    for (const stop of stops) stop();
    root.remove();
  };
}
