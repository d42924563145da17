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
