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

/**
 * Where a user lands after logging in without a ?next=: whoever rates scans anywhere, on their
 * worklist (its header links to the projects they lead); a lead or admin who rates nothing, on
 * their one project's home, or on the projects page when they run several (site admins always).
 * @param {{is_site_admin: boolean, memberships: {project: number, role: string}[]}} me
 * @returns {string}
 */
export function landingPath(me) {
  const memberships = me?.memberships || [];
  if (memberships.some((m) => m.role === "annotator")) return "/";
  if (me?.is_site_admin) return "/projects/";
  const managed = memberships.filter((m) => m.role === "lead" || m.role === "admin");
  if (managed.length === 1) return `/projects/${managed[0].project}/`;
  return managed.length ? "/projects/" : "/";
}
