/** Tokens shown with their whitespace made visible. */

const VISIBLE = {
  " ": "␣",
  "\n": "↵",
  "\t": "→",
  "\r": "␍",
  "\u00a0": "⍽",
};

const WHITESPACE = /[ \n\t\r\u00a0]/g;

/** " the\n" -> "␣the↵"; the empty string shows as "∅" so it is never invisible. */
export function showWhitespace(token) {
  if (token == null) return "";
  const text = String(token);
  if (text === "") return "∅";
  return text.replace(WHITESPACE, (ch) => VISIBLE[ch]);
}

/** Shorten to at most `max` characters with an ellipsis. */
export function truncate(text, max) {
  const s = String(text);
  if (s.length <= max) return s;
  return `${s.slice(0, Math.max(0, max - 1))}…`;
}

/** The visible label of token `index`, or the index itself when there are no tokens. */
export function tokenLabel(tokens, index) {
  if (Array.isArray(tokens) && index < tokens.length) return showWhitespace(tokens[index]);
  return String(index);
}
