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
