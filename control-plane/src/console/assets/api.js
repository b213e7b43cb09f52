// The one way the console reads and changes anything: the admin REST API with the bearer
// token (control-plane/src/api/auth.rs). The token lives in sessionStorage: gone when the tab
// closes, never in a cookie, never in the page's URL.

const TOKEN = 'kakeya.admin_token';
const REVIEWER = 'kakeya.reviewer';

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  reviewer: () => sessionStorage.getItem(REVIEWER) || 'console',
  save(token, reviewer) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(REVIEWER, reviewer);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
  },
};

/** An error answer of the API: its status and `{error, code}` body. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the API says 401: the app shows the sign-in form again. */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

async function call(method, path, body, token = session.token()) {
  const headers = { authorization: `Bearer ${token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  const type = r.headers.get('content-type') || '';
  const data = type.includes('json') && text ? JSON.parse(text) : text;
  if (!r.ok) {
    if (r.status === 401) onUnauthorized();
    throw new ApiError(r.status, data.code || 'error', data.error || `${r.status} ${r.statusText}`);
  }
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);

/** True when `token` opens the admin API (a cheap protected route). */
export async function checkToken(token) {
  try {
    await call('GET', '/v1/operator/leader', undefined, token);
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}
