/**
 * One tooltip per widget, positioned inside the widget root (which is
 * position: relative), so transformed or contained notebook cells do not
 * displace it the way position: fixed would.
 */
import { h } from "./dom.js";

export function createTooltip(host) {
  const tip = h("div", { class: "nnsight-tooltip", role: "tooltip" });
  tip.hidden = true;
  host.append(tip);
  return {
    element: tip,
    show(text, clientX, clientY) {
      tip.textContent = text;
      tip.hidden = false;
      const box = host.getBoundingClientRect();
      let x = clientX - box.left + 14;
      const y = clientY - box.top + 16;
      const room = host.clientWidth - tip.offsetWidth - 4;
      if (room > 0 && x > room) x = Math.max(0, clientX - box.left - tip.offsetWidth - 10);
      tip.style.left = `${Math.round(x)}px`;
      tip.style.top = `${Math.round(y)}px`;
    },
    hide() {
      tip.hidden = true;
    },
    get visible() {
      return !tip.hidden;
    },
    get text() {
      return tip.textContent;
    },
  };
}
