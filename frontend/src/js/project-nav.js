// The navigation of one project's lead pages: Home / Scans / People / Settings / Dashboard /
// Exports, rendered into the page's <nav id="project-nav">, the current page marked
// (aria-current="page"). Every lead page of a project calls renderProjectNav(projectId, key).

/** The lead pages of a project, in order: key, text, address. */
export const PROJECT_PAGES = [
  ["home", "Home", (id) => `/projects/${id}/`],
  ["scans", "Scans", (id) => `/projects/${id}/scans/`],
  ["people", "People", (id) => `/projects/${id}/people/`],
  ["settings", "Settings", (id) => `/projects/${id}/settings/`],
  ["dashboard", "Dashboard", (id) => `/dashboard/${id}/`],
  ["exports", "Exports", (id) => `/exports/${id}/`],
];

/**
 * Fill the element with id ``project-nav`` with the project's page links and show it.
 * @param {number} projectId
 * @param {"home"|"scans"|"people"|"settings"|"dashboard"|"exports"|null} current the page shown
 * @param {{projectName?: string}} [options] a name to put before the links
 * @returns {HTMLElement|null} the nav element, or null when the page has none
 */
export function renderProjectNav(projectId, current, { projectName = "" } = {}) {
  const nav = document.getElementById("project-nav");
  if (!nav || !projectId) return null;
  const children = [];
  if (projectName) {
    const name = document.createElement("strong");
    name.className = "project-nav-name";
    name.textContent = projectName;
    children.push(name);
  }
  for (const [key, text, href] of PROJECT_PAGES) {
    const a = document.createElement("a");
    a.href = href(projectId);
    a.textContent = text;
    a.dataset.page = key;
    if (key === current) a.setAttribute("aria-current", "page");
    children.push(a);
  }
  nav.replaceChildren(...children);
  nav.setAttribute("aria-label", "Project pages");
  nav.classList.add("project-nav");
  nav.hidden = false;
  return nav;
}
