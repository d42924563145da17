// What a lead's project page does first: who is logged in, which project the address names,
// and whether this user may see it (its leads and admins). Annotators and non-members get a
// message saying so (the server answered the page with 403 / 404 and refuses them the data).
import { ApiError, api } from "./api.js";
import { renderProjectNav } from "./project-nav.js";
import { $, idFromPath, markReady, requireUser, showUser } from "./session.js";

export const MANAGER_ROLES = new Set(["lead", "admin"]);

/** Show the page's #forbidden banner with ``text``, and mark the page "forbidden". */
export function showForbidden(text) {
  $("forbidden-text").textContent = text;
  $("forbidden").hidden = false;
  markReady("forbidden");
}

/** Show the header's link to the worklist when the user rates scans somewhere. */
export function showWorklistLink(me) {
  const link = $("worklist-link");
  if (link) link.hidden = !me.memberships.some((m) => m.role === "annotator");
}

/**
 * The logged-in user and the project of a page like /projects/<id>/<page>/, or null (and the
 * forbidden banner) when the user does not lead or administer it.
 * @param {"home"|"settings"|"people"} navKey the page, for the project navigation
 * @param {string} what what the page is, for the refusal ("Project settings")
 * @returns {Promise<{me: object, project: object}|null>}
 */
export async function loadManagedProject(navKey, what) {
  const me = await requireUser();
  showUser(me);
  showWorklistLink(me);
  const match = window.location.pathname.match(/\/projects\/(\d+)\//);
  const projectId = match ? Number(match[1]) : idFromPath("projects");
  let project;
  try {
    project = await api.project(projectId);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) {
      showForbidden(`Project ${projectId} does not exist, or you are not a member of it.`);
      return null;
    }
    throw error;
  }
  if (!MANAGER_ROLES.has(project.my_role)) {
    showForbidden(
      `You are an ${project.my_role} in “${project.name}”. ${what} are for its leads and admins; ` +
        "raters are blinded to each other, so the project's people, figures and settings are not shown to them.",
    );
    return null;
  }
  document.title = `${what} · ${project.name} · mriannot`;
  renderProjectNav(project.id, navKey, { projectName: project.name });
  return { me, project };
}
