// Where the log-in page may send the user afterwards: a path on this site, nothing else.
//
// The server drops a ?next= that leaves the site before it serves the page (frontend/views.py);
// this checks again in the browser. A browser reads "/\evil.example", "/\t/evil.example" (tabs
// and newlines are removed) and "//evil.example" as another host, so the value must start with
// one "/", hold no backslash or control character, and resolve to this page's own origin.

/**
 * The path to go to after logging in.
 * @param {string|null} raw the ?next= value
 * @param {string} origin this page's origin, e.g. "https://mriannot.example.org"
 * @returns {string} a same-origin path (with its query and fragment), or "/"
 */
export function safeNextPath(raw, origin) {
  if (typeof raw !== "string" || !raw.startsWith("/") || raw.startsWith("//")) return "/";
  if (/[\\\u0000-\u001f\u007f]/.test(raw)) return "/";
  let url;
  try {
    url = new URL(raw, origin);
  } catch {
    return "/";
  }
  if (url.origin !== new URL(origin).origin) return "/";
  return url.pathname + url.search + url.hash;
}
