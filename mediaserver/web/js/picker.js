// The stream picker at /: live streams of the apps anyone may watch, refreshed every few seconds.

import {NAME, el, explain, getJSON, sleep} from './common.js';
import {codecName} from './engines.js';

const list = document.getElementById('streams');
const empty = document.getElementById('empty');
const error = document.getElementById('list-error');
const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
document.getElementById('rtmp-server').textContent = `rtmp://${host}/live`;
document.getElementById('rtmp-example').textContent = `rtmp://${host}/live/NAME`;

const THUMB_REFRESH_MS = 10000;

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
      el('a', {href},
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
  location.assign(`/play/${encodeURIComponent(app)}/${encodeURIComponent(name)}`);
});

(async () => {
  for (;;) {
    await refresh();
    await sleep(document.hidden ? 15000 : 4000);
  }
})();
