// What the pages share: building DOM without HTML strings, JSON requests, number formats, script loading.
// Data from the server or the URL only ever becomes text nodes and attributes, never markup.

export const NAME = /^[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}$/;

/** el('td', {class: 'x', text: 'hi', title: 't'}, child...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** fetch + JSON: {ok, status, body} where body is the parsed JSON or null; never throws for HTTP errors. */
export async function getJSON(url, options = {}) {
  let resp;
  try {
    resp = await fetch(url, {cache: 'no-store', ...options});
  } catch (err) {
    return {ok: false, status: 0, body: null, networkError: String(err)};
  }
  let body = null;
  if ((resp.headers.get('Content-Type') || '').includes('application/json')) {
    try { body = await resp.json(); } catch { body = null; }
  }
  return {ok: resp.ok, status: resp.status, body};
}

/** The server's error as one sentence: "error. hint" from its {error, hint} JSON. */
export function explain(result, fallback) {
  const b = result && result.body;
  if (b && b.error) return b.hint ? `${b.error}. ${b.hint}` : b.error;
  if (result && result.status === 0) return 'the server cannot be reached';
  return fallback || `the server answered ${result ? result.status : '?'}`;
}

export function formatKbps(kbps) {
  if (kbps === null || kbps === undefined || !isFinite(kbps)) return '–';
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(2)} Mbit/s`;
  return `${Math.round(kbps)} kbit/s`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, '0')} min`;
  if (m) return `${m} min ${String(sec).padStart(2, '0')} s`;
  return `${sec} s`;
}

const scripts = new Map();

/** Load a same-origin script once (the vendored players); resolves when it has run. */
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const tag = el('script', {src});
      tag.addEventListener('load', () => resolve());
      tag.addEventListener('error', () => {
        scripts.delete(src);
        reject(new Error(`could not load ${src}`));
      });
      document.head.append(tag);
    }));
  }
  return scripts.get(src);
}

export const VENDOR = {
  hls: '/static/vendor/hls.min.js',
  hlsWorker: '/static/vendor/hls.worker.js',
  dash: '/static/vendor/dash.mediaplayer.min.js',
  mpegts: '/static/vendor/mpegts.js',
};

/** A URL path with the play token (if any) as its query. */
export function withToken(path, token) {
  return token ? `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : path;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
