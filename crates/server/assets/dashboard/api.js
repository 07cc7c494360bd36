// Talking to the server: the token (kept in sessionStorage: entered once per tab,
// gone when it closes), JSON calls with the API's error shape, images through the
// normal /generate path (cached per tab), and edit events over SSE.

const TOKEN_KEY = "refact-token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = "Bearer " + token();
  return h;
}

/// An error from the API: `code` is the stable machine-readable part.
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || { code: String(status), message: "HTTP " + status };
    super(`${e.code}: ${e.message}${e.field ? " (" + e.field + ")" : ""}`);
    this.status = status;
    this.code = e.code;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const images = new Map();

/// Renders `body` at `version` (a number, an alias, or "" for the server's default) and returns
/// `{url, version, seed}`; the same request is rendered once per tab.
export function image(version, body) {
  const key = JSON.stringify([String(version), body]);
  // The default version moves with the production alias: never answered from the cache.
  if (version === "" || version == null) images.delete(key);
  if (!images.has(key)) {
    const request = (async () => {
      // No version: the server's default (the `production` alias, else the head).
      const query = version === "" || version == null ? "" : "?version=" + encodeURIComponent(version);
      const response = await fetch("/generate" + query, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "image/png" }),
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      return {
        url: URL.createObjectURL(await response.blob()),
        version: response.headers.get("x-refact-version"),
        seed: response.headers.get("x-refact-seed"),
      };
    })();
    images.set(key, request);
    request.catch(() => images.delete(key));
  }
  return images.get(key);
}

/// Follows `/edits/{id}/events` until the stream ends or `signal` aborts, calling
/// `onEvent` with each event's JSON. Through fetch, since EventSource cannot send the
/// Authorization header.
export async function follow(id, onEvent, signal) {
  const response = await fetch(`/edits/${id}/events`, { headers: headers(), signal });
  if (!response.ok) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
  }
}
