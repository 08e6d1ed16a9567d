import { read, save } from "./model.js";

/**
 * Copy text to the clipboard without ever failing the caller: the async
 * Clipboard API first, then the old execCommand route (VS Code webviews and
 * some iframes refuse the first). Resolves to true when one of them worked.
 */
export async function copyText(text) {
  try {
    if (globalThis.navigator?.clipboard?.writeText) {
      await globalThis.navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the legacy route
  }
  try {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.append(area);
    area.select();
    const ok = typeof document.execCommand === "function" && document.execCommand("copy");
    area.remove();
    return Boolean(ok);
  } catch {
    return false;
  }
}

/**
 * A click on `path`: write it to the model's `selected` trait, copy it, and call
 * `onCopied` once the copy worked, if `selected` still holds `path` by then.
 */
export function selectAndCopy(model, path, onCopied) {
  save(model, "selected", path);
  copyText(path).then((ok) => {
    if (ok && read(model, "selected", "") === path) onCopied();
  });
}
