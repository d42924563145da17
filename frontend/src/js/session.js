// Who is logged in: the header's user name and log-out button, shared by every page.
import { api, isAuthError, redirectToLogin } from "./api.js";

/**
 * The current user, or a redirect to the log-in page when nobody is logged in.
 * @returns {Promise<{id:number, username:string, is_site_admin:boolean, memberships:Array}>}
 */
export async function requireUser() {
  try {
    return await api.me();
  } catch (error) {
    if (isAuthError(error)) {
      redirectToLogin();
      return new Promise(() => {}); // the page is going away
    }
    throw error;
  }
}

/** Fill the page header (#who, #logout) for the logged-in user. */
export function showUser(me, { beforeLogout } = {}) {
  const who = document.getElementById("who");
  if (who) who.textContent = me.username;
  const button = document.getElementById("logout");
  if (!button) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    if (beforeLogout) await beforeLogout();
    try {
      await api.logout();
    } finally {
      window.location.assign("/login/");
    }
  });
}

/** Show an error in the page's alert area (#page-error). */
export function showPageError(message) {
  const box = document.getElementById("page-error");
  if (box) {
    box.textContent = message;
    box.hidden = false;
  } else {
    window.alert(message);
  }
}

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** The number at the end of the page's path, e.g. 12 for /review/12/ (``idFromPath("review")``). */
export function idFromPath(page) {
  const match = window.location.pathname.match(new RegExp(`/${page}/(\\d+)/?$`));
  return match ? Number(match[1]) : null;
}

/** Tell the tests (and anyone watching) the page's state: "true", "forbidden" or "error". */
export function markReady(state = "true") {
  document.body.dataset.ready = state;
}

/**
 * Run a page's main function: an expired session goes to the log-in page; any other failure is
 * shown in the page's alert area (and ``loadingText`` in #loading), and the page marked "error".
 */
export function runPage(main, { loadingText = "" } = {}) {
  main().catch((error) => {
    if (isAuthError(error)) {
      redirectToLogin();
      return;
    }
    const loading = document.getElementById("loading");
    if (loadingText && loading) loading.textContent = loadingText;
    showPageError(error.message);
    markReady("error");
    console.error(error);
  });
}
