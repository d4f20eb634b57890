// The stream picker at /: live streams of the apps anyone may watch, refreshed every few seconds.
// Opening a stream asks /api/v1/route/APP/NAME first and goes to the player page on the edge it names
// (this host's player when standalone, or when the route fails).

import {NAME, el, explain, getJSON, sleep} from './common.js';
import {codecName} from './engines.js';

const list = document.getElementById('streams');
const empty = document.getElementById('empty');
const error = document.getElementById('list-error');
const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
document.getElementById('rtmp-server').textContent = `rtmp://${host}/live`;
document.getElementById('rtmp-example').textContent = `rtmp://${host}/live/NAME`;

const THUMB_REFRESH_MS = 10000;
const ROUTE_TIMEOUT_MS = 3000;

/** The player page of app/name on the least loaded edge; this host's when the route cannot say. */
async function playerUrl(app, name) {
  const here = `/play/${encodeURIComponent(app)}/${encodeURIComponent(name)}`;
  const path = `/api/v1/route/${encodeURIComponent(app)}/${encodeURIComponent(name)}`;
  const options = typeof AbortSignal.timeout === 'function' ? {signal: AbortSignal.timeout(ROUTE_TIMEOUT_MS)} : {};
  const result = await getJSON(path, options);
  if (!result.ok || !result.body || result.body.standalone || typeof result.body.player !== 'string') return here;
  try {
    const target = new URL(result.body.player, location.href);
    if (!/^https?:$/.test(target.protocol) || target.origin === location.origin) return here;
    target.searchParams.set('routed', '1');  // the edge's page plays there without asking again
    return target.href;
  } catch {
    return here;
  }
}

/** A plain click on a stream goes through the route (a new tab opens this host's player, which routes itself). */
function openRouted(event, app, name) {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  playerUrl(app, name).then((url) => location.assign(url));
}

/** The stream's newest keyframe; the URL changes every few seconds so the browser fetches a fresh one. */
function thumbnail(s) {
  if (!s.video) return null;
  const src = `/${encodeURIComponent(s.app)}/${encodeURIComponent(s.name)}/thumbnail.jpg?width=320`
    + `&t=${Math.floor(Date.now() / THUMB_REFRESH_MS)}`;
  return el('img', {class: 'thumb', src, alt: '', width: 160, onerror: (e) => { e.target.hidden = true; }});
}

function render(streams) {
  list.replaceChildren(...streams.map((s) => {
    const codecs = [s.video, s.audio].filter(Boolean).map(codecName).join(' + ') || 'no media yet';
    const href = `/play/${encodeURIComponent(s.app)}/${encodeURIComponent(s.name)}`;
    return el('li', {},
      el('a', {href, onclick: (event) => openRouted(event, s.app, s.name)},
        thumbnail(s),
        el('strong', {text: `${s.app}/${s.name}`}),
        el('span', {},
          el('span', {class: 'muted', text: `${codecs} `}),
          s.renditions && s.renditions.length
            ? el('span', {class: 'muted', text: `ABR ${s.renditions.join(' ')} `}) : null,
          el('span', {class: s.live ? 'badge live' : 'badge idle', text: s.live ? 'live' : 'reconnecting'}))));
  }));
  empty.hidden = streams.length > 0;
}

async function refresh() {
  const result = await getJSON('/streams.json');
  if (result.ok) {
    error.textContent = '';
    render(result.body.streams);
  } else {
    error.textContent = `The stream list is unavailable: ${explain(result)}`;
  }
}

document.getElementById('open').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = document.getElementById('open-name');
  const [app, name, ...rest] = input.value.trim().replace(/^\/+/, '').split('/');
  if (rest.length || !NAME.test(app || '') || !NAME.test(name || '')) {
    error.textContent = 'Write the stream as APP/NAME, e.g. live/studio (letters, digits, _ - . ~).';
    return;
  }
  playerUrl(app, name).then((url) => location.assign(url));
});

(async () => {
  for (;;) {
    await refresh();
    await sleep(document.hidden ? 15000 : 4000);
  }
})();
