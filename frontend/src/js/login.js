// The log-in page: POST auth/login/, then go where the user was going (or the worklist).
import { api, ApiError } from "./api.js";
import { safeNextPath } from "./next-url.js";

function nextUrl() {
  // Only same-site paths: never send the user to another origin after logging in.
  return safeNextPath(new URLSearchParams(window.location.search).get("next"), window.location.origin);
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const button = document.getElementById("login-button");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  button.disabled = true;
  try {
    await api.login(document.getElementById("username").value, document.getElementById("password").value);
    window.location.assign(nextUrl());
  } catch (err) {
    error.textContent = err instanceof ApiError ? err.message : `${err.message}`;
    button.disabled = false;
  }
});

// Already logged in: go straight on.
api.me().then(() => window.location.assign(nextUrl())).catch(() => {
  document.getElementById("username").focus();
});
