/** The root element every widget renders into, with the shared and its own stylesheet. */
import baseCss from "../styles/base.css?raw";
import { h } from "./dom.js";
import { injectStyle } from "./style.js";

export function mountRoot(el, className, css) {
  injectStyle(el, "base", baseCss);
  injectStyle(el, className, css);
  const root = h("div", { class: `nnsight-widget ${className}` });
  el.append(root);
  return root;
}
