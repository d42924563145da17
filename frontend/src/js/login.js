// The log-in page: POST auth/login/, then go where the user was going, or where they work:
// the worklist for raters, the project pages for leads and admins (next-url.js landingPath).
import { api, ApiError } from "./api.js";
import { landingPath, safeNextPath } from "./next-url.js";

function nextUrl(me) {
  // Only same-site paths: never send the user to another origin after logging in.
  const raw = new URLSearchParams(window.location.search).get("next");
  return raw ? safeNextPath(raw, window.location.origin) : landingPath(me);
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const button = document.getElementById("login-button");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  button.disabled = true;
  try {
    const me = await api.login(document.getElementById("username").value, document.getElementById("password").value);
    window.location.assign(nextUrl(me));
  } catch (err) {
    error.textContent = err instanceof ApiError ? err.message : `${err.message}`;
    button.disabled = false;
  }
});

// Already logged in: go straight on.
api.me().then((me) => window.location.assign(nextUrl(me))).catch(() => {
  document.getElementById("username").focus();
});
