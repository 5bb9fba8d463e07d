// @ts-check
/**
 * Writing through the HTTP API (/api/v1) from a signed-in page: the session cookie rides along,
 * the page's CSRF token (from <meta name="csrf-token">) goes in X-CSRF-Token, and edits carry
 * If-Match with the version the page last saw, so a stale edit is refused (412), never applied.
 */

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta instanceof HTMLMetaElement ? meta.content : "";
}

/**
 * @param {string} method
 * @param {string} url
 * @param {unknown} [body]
 * @param {{ifMatch?: number}} [options]
 * @returns {Promise<any>}
 */
export async function api(method, url, body, options = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (options.ifMatch !== undefined) headers["If-Match"] = `"${options.ifMatch}"`;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "The server could not be reached. Nothing was saved; try again.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_error", message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

/** Words for a person, by status. @param {unknown} error */
export function explain(error) {
  if (!(error instanceof ApiError)) return "Something went wrong; nothing was saved.";
  switch (error.status) {
    case 401:
      return "Your session has ended. Sign in again (your changes were not saved).";
    case 403:
      return `Not allowed: ${error.message}`;
    case 409:
      return `Not possible: ${error.message}`;
    case 412:
      return "Changed by someone else: nothing was saved.";
    case 422:
      return `Please check: ${error.message}`;
    default:
      return error.message;
  }
}

/** The ward's clinical snapshot, fresh from the store. @param {string} ward */
export function wardSnapshot(ward) {
  return api("GET", `/api/v1/wards/${encodeURIComponent(ward)}?view=clinical`);
}

const KEEP_ALIVE_EVERY_MS = 4 * 60 * 1000;

/**
 * Keep the session from idling out while a person is using the page: on a tap or a key, at
 * most every 4 minutes, ask the server to sign the session cookie again. A page left alone
 * still signs out after the server's idle limit.
 */
export function keepSessionAlive() {
  let last = Date.now();
  const ping = () => {
    if (Date.now() - last < KEEP_ALIVE_EVERY_MS) return;
    last = Date.now();
    fetch("/session/keepalive", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
    }).catch(() => {
      /* offline: the next tap tries again */
    });
  };
  for (const type of ["pointerdown", "keydown"]) window.addEventListener(type, ping, { passive: true });
}
