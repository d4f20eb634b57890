// The operator console at /console. Everything it shows comes from the admin API (/api/v1, bearer
// token) and /console/history.json (same token), refreshed every two seconds without reloading.
// The operator types the token; it is kept in this tab's sessionStorage and sent only to this origin.

import {NAME, el, explain, formatDuration, formatKbps, getJSON, sleep, withToken} from './common.js';
import {cannotPlay, codecName, createEngine} from './engines.js';
import {renderAbr} from './console_abr.js';
import {relaysCell, renderPulls} from './console_relays.js';
import {RecordingsView, renderRecord} from './console_recordings.js';
import {sparkline} from './sparkline.js';

const TOKEN_KEY = 'mediaserver.adminToken';
const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
const ui = {
  login: $('login'), loginForm: $('login-form'), token: $('token'), loginError: $('login-error'),
  dashboard: $('dashboard'), apiError: $('api-error'), signOut: $('sign-out'), refreshed: $('refreshed'),
  streams: document.querySelector('#streams tbody'), noStreams: $('no-streams'),
  nodes: document.querySelector('#nodes tbody'),
  preview: $('preview'), previewTitle: $('preview-title'), previewVideo: $('preview-video'),
  previewStatus: $('preview-status'), previewClose: $('preview-close'),
  confirm: $('confirm'), confirmText: $('confirm-text'), confirmOk: $('confirm-ok'),
  recordings: {
    form: $('rec-filter'), app: $('rec-app'), stream: $('rec-stream'),
    table: document.querySelector('#recordings tbody'), empty: $('no-recordings'), more: $('rec-more'),
  },
};
const RECORDINGS_EVERY = 5;  // refreshes: the recordings list is read every 10 s (and after each change)

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let generation = 0;       // bumps on sign-in/out so an old refresh loop stops
const rows = new Map();   // "app/name" -> {tr, cells, stream}
let preview = null;       // {key, engine}

function api(path, {method = 'GET', body} = {}) {
  const headers = {Authorization: `Bearer ${token}`};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return getJSON(`/api/v1${path}`, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
}

const recordings = new RecordingsView(ui.recordings, {
  api, report: (message) => { ui.apiError.textContent = message; }, confirm: (text, ok) => confirmAction(text, ok),
});

function streamPath(s) {
  return `${encodeURIComponent(s.app)}/${encodeURIComponent(s.name)}`;
}

// ----- sign in / out -------------------------------------------------------------------------------

function showLogin(message) {
  generation += 1;
  closePreview();
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.login.hidden = false;
  ui.loginError.textContent = message || '';
  ui.refreshed.textContent = '';
  ui.token.focus();
}

function loginMessage(result) {
  if (result.status === 401) return `The server refused that token: ${explain(result)}`;
  if (result.status === 503) return `The admin API is off: ${explain(result)}`;
  return `Signing in failed: ${explain(result)}`;
}

ui.loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  token = ui.token.value.trim();
  ui.loginError.textContent = '';
  const result = await api('/streams');
  if (!result.ok) {
    token = '';
    ui.token.select();
    ui.loginError.textContent = loginMessage(result);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  ui.token.value = '';
  showDashboard(result.body);
});

ui.signOut.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = '';
  showLogin();
});

function showDashboard(firstStreams) {
  ui.login.hidden = true;
  ui.dashboard.hidden = false;
  ui.signOut.hidden = false;
  generation += 1;
  refreshLoop(generation, firstStreams);
}

// ----- refreshing ----------------------------------------------------------------------------------

async function refreshLoop(mine, firstStreams) {
  let streams = firstStreams || null;
  let round = 0;
  while (mine === generation) {
    if (round++ % RECORDINGS_EVERY === 0) recordings.refresh();
    const [s, history, nodes, pulls] = await Promise.all([
      streams ? Promise.resolve({ok: true, status: 200, body: streams}) : api('/streams'),
      getJSON('/console/history.json', {headers: {Authorization: `Bearer ${token}`}}),
      api('/nodes'),
      api('/pulls'),
    ]);
    streams = null;
    if (mine !== generation) return;
    if ([s, history, nodes].some((r) => r.status === 401)) {
      sessionStorage.removeItem(TOKEN_KEY);
      token = '';
      showLogin('The server no longer accepts the token (was it changed?). Sign in again.');
      return;
    }
    if (!s.ok) {
      ui.apiError.textContent = `Streams could not be read: ${explain(s)}`;
    } else {
      ui.apiError.textContent = '';
      renderStreams(s.body.streams, history.ok ? history.body : null);
    }
    if (nodes.ok) renderNodes(nodes.body.nodes);
    if (pulls.ok) renderPulls($('pulls-view'), document.querySelector('#pulls tbody'), pulls.body.pulls);
    ui.refreshed.textContent = `updated ${new Date().toLocaleTimeString()}`;
    await sleep(REFRESH_MS);
  }
}

function describeVideo(v) {
  if (!v) return '–';
  const size = v.width && v.height ? ` ${v.width}×${v.height}` : '';
  const fps = v.fps ? ` ${Math.round(v.fps * 100) / 100} fps` : '';
  return `${codecName(v.codec)}${size}${fps}`;
}

function describeAudio(a) {
  if (!a) return '–';
  const rate = a.sample_rate ? ` ${a.sample_rate / 1000} kHz` : '';
  const ch = a.channels === 1 ? ' mono' : a.channels === 2 ? ' stereo' : a.channels ? ` ${a.channels} ch` : '';
  return `${codecName(a.codec)}${rate}${ch}`;
}

function describeViewers(viewers, segmentViewers) {
  const parts = Object.entries(viewers || {}).sort().map(([kind, n]) => `${kind} ${n}`);
  if (segmentViewers) parts.push(`HLS/DASH ${segmentViewers}`);
  return parts.length ? parts.join(' · ') : 'none';
}

function newRow(key) {
  const cells = {};
  const tr = el('tr', {dataset: {stream: key}});
  for (const name of ['stream', 'media', 'ingest', 'uptime', 'viewers', 'drops', 'abr', 'record', 'relays', 'ingestSpark', 'viewerSpark', 'actions']) {
    cells[name] = el('td', {class: name === 'actions' ? 'actions' : undefined, dataset: {col: name}});
    tr.append(cells[name]);
  }
  const row = {tr, cells, stream: null};
  cells.link = el('a', {target: '_blank', rel: 'noopener'});
  cells.badge = el('span', {class: 'badge'});
  cells.publisher = el('div', {class: 'muted', dataset: {col: 'publisher'}});
  cells.stream.append(cells.link, ' ', cells.badge, cells.publisher);
  cells.video = el('div', {dataset: {col: 'video'}});
  cells.audio = el('div', {dataset: {col: 'audio'}});
  cells.media.append(cells.video, cells.audio);
  cells.previewButton = el('button', {type: 'button', text: 'Preview', dataset: {action: 'preview'}});
  cells.kickViewers = el('button', {type: 'button', class: 'danger', text: 'Kick viewers', dataset: {action: 'kick-viewers'}});
  cells.kickPublisher = el('button', {type: 'button', class: 'danger', text: 'Kick publisher', dataset: {action: 'kick-publisher'}});
  cells.previewButton.addEventListener('click', () => openPreview(row.stream));
  cells.kickViewers.addEventListener('click', () => kickViewers(row.stream));
  cells.kickPublisher.addEventListener('click', () => kickPublisher(row.stream));
  cells.actions.append(cells.previewButton, cells.kickViewers, cells.kickPublisher);
  row.updateRelays = relaysCell(cells.relays, {api, report: (message) => { ui.apiError.textContent = message; }});
  return row;
}

function renderStreams(streams, history) {
  const series = new Map((history ? history.streams : []).map((h) => [`${h.app}/${h.name}`, h]));
  const seen = new Set();
  streams.forEach((s, index) => {
    const key = `${s.app}/${s.name}`;
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = newRow(key);
      rows.set(key, row);
    }
    row.stream = s;
    const c = row.cells;
    const h = series.get(key);
    c.link.textContent = key;
    c.link.href = `/play/${streamPath(s)}`;
    c.badge.textContent = s.state === 'live' ? 'live' : 'reconnecting';
    c.badge.className = s.state === 'live' ? 'badge live' : 'badge idle';
    c.publisher.textContent = s.publisher ? `from ${s.publisher}` : 'publisher gone';
    c.video.textContent = describeVideo(s.video);
    c.audio.textContent = describeAudio(s.audio);
    renderHealth(row, s);
    renderThumbnail(row, s);
    const rate = s.bitrate_kbps || {};
    c.ingest.textContent = formatKbps(rate.measured);
    c.ingest.title = rate.declared ? `declared by the encoder: ${Object.entries(rate.declared).map(([k, v]) => `${k} ${v} kbit/s`).join(', ')}` : '';
    c.uptime.textContent = formatDuration(s.uptime_s);
    c.viewers.textContent = describeViewers(s.viewers, h ? h.segment_viewers : 0);
    c.drops.textContent = String(s.frames_dropped ?? '–');
    const minutes = history ? Math.round(history.window_s / 60) : 0;
    const kbps = h ? h.kbps : [];
    const viewers = h ? h.viewers : [];
    c.ingestSpark.replaceChildren(
      sparkline(kbps, {width: 100, title: `ingest kbit/s over the last ${minutes} min; now ${kbps.length ? kbps[kbps.length - 1] : '–'}`}),
      el('span', {class: 'spark-label', text: kbps.length ? `max ${formatKbps(Math.max(...kbps))}` : 'collecting…'}));
    c.viewerSpark.replaceChildren(
      sparkline(viewers, {width: 100, title: `viewers over the last ${minutes} min`}),
      el('span', {class: 'spark-label', text: viewers.length ? `max ${Math.max(...viewers)}` : 'collecting…'}));
    c.kickViewers.disabled = !s.viewers_total;
    renderAbr(c.abr, s, {api, report: (message) => { ui.apiError.textContent = message; }});
    renderRecord(c.record, s, {api, report: (message) => { ui.apiError.textContent = message; },
      changed: () => setTimeout(() => recordings.load(), 500)});
    row.updateRelays(s);
    if (ui.streams.children[index] !== row.tr) ui.streams.insertBefore(row.tr, ui.streams.children[index] || null);
  });
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.tr.remove();
      rows.delete(key);
      if (preview && preview.key === key) endPreview('The stream ended.');
    }
  }
  ui.noStreams.hidden = streams.length > 0;
}

// ----- stream health badges and thumbnails --------------------------------------------------------------

const HEALTH_LABELS = {black: 'black picture', frozen: 'frozen picture', silent: 'silent'};
const THUMB_REFRESH_MS = 10000;

/** One badge per flagged health condition ([health] enabled), after the live badge. */
function renderHealth(row, s) {
  if (!row.health) {
    row.health = el('span', {class: 'health', dataset: {col: 'health'}});
    row.cells.badge.after(row.health);
  }
  const flags = Object.entries(s.health || {}).filter(([, flag]) => flag);
  row.health.replaceChildren(...flags.map(([condition, flag]) => el('span', {
    class: 'badge bad', text: HEALTH_LABELS[condition] || condition,
    title: `${HEALTH_LABELS[condition] || condition} for ${formatDuration(flag.duration_s)}`,
  })));
}

/** The newest keyframe, refreshed every few seconds (a stream whose app needs a play token shows none). */
function renderThumbnail(row, s) {
  if (!s.video) {
    if (row.thumb) row.thumb.hidden = true;
    return;
  }
  if (!row.thumb) {
    row.thumb = el('img', {class: 'thumb', alt: '', width: 160, loading: 'lazy'});
    row.thumb.addEventListener('error', () => { row.thumb.hidden = true; });
    row.thumb.addEventListener('load', () => { row.thumb.hidden = false; });
    row.cells.stream.prepend(row.thumb);
  }
  const src = `/${streamPath(s)}/thumbnail.jpg?width=320&t=${Math.floor(Date.now() / THUMB_REFRESH_MS)}`;
  if (row.thumb.getAttribute('src') !== src) row.thumb.src = src;
}

function renderNodes(nodes) {
  // A single node says who it is; a cluster's nodes (from their heartbeats) also give role and egress.
  const show = (v) => (v === undefined || v === null ? '–' : String(v));
  ui.nodes.replaceChildren(...nodes.map((n) => {
    const name = n.name || n.id || '?';
    return el('tr', {dataset: {node: name}},
      el('td', {text: n.self ? `${name} (this node)` : name, title: n.http || ''}),
      el('td', {text: show(n.role)}),
      el('td', {text: show(n.version)}),
      el('td', {text: show(n.streams)}),
      el('td', {text: show(n.viewers)}),
      el('td', {text: typeof n.egress_bps === 'number' ? formatKbps(n.egress_bps / 1000) : '–'}));
  }));
}

// ----- kicking -------------------------------------------------------------------------------------

function confirmAction(text, okLabel) {
  ui.confirmText.textContent = text;
  ui.confirmOk.textContent = okLabel;
  ui.confirm.returnValue = '';
  return new Promise((resolve) => {
    ui.confirm.addEventListener('close', () => resolve(ui.confirm.returnValue === 'ok'), {once: true});
    ui.confirm.showModal();
  });
}

async function kickPublisher(s) {
  const key = `${s.app}/${s.name}`;
  if (!await confirmAction(`Kick the publisher of ${key}? The stream ends for every viewer.`, 'Kick publisher')) return;
  const result = await api(`/streams/${streamPath(s)}/kick`, {method: 'POST', body: {reason: 'kicked_by_operator'}});
  ui.apiError.textContent = result.ok ? '' : `Kicking ${key} failed: ${explain(result)}`;
}

async function kickViewers(s) {
  const key = `${s.app}/${s.name}`;
  const n = s.viewers_total || 0;
  if (!await confirmAction(`Disconnect the ${n} connected viewer${n === 1 ? '' : 's'} of ${key}? (HLS and DASH viewers hold no connection and are not affected.)`, 'Kick viewers')) return;
  const result = await api(`/streams/${streamPath(s)}/viewers/kick`, {method: 'POST', body: {reason: 'kicked_by_operator'}});
  ui.apiError.textContent = result.ok ? '' : `Kicking the viewers of ${key} failed: ${explain(result)}`;
}

// ----- preview -------------------------------------------------------------------------------------

async function openPreview(s) {
  const key = `${s.app}/${s.name}`;
  closePreview();
  const [base, label] = s.name.split('@');  // a rendition (STREAM@LABEL) previews like any stream
  if (!NAME.test(s.app) || !NAME.test(base) || (label !== undefined && !/^[a-z0-9_-]{1,32}$/.test(label))) return;
  ui.preview.hidden = false;
  ui.previewTitle.textContent = `Preview of ${key}`;
  ui.previewStatus.textContent = 'Connecting…';
  const mine = preview = {key, engine: null};
  let playToken = '';
  let status = await getJSON(`/play/${streamPath(s)}/status.json`);
  if (status.status === 401 || status.status === 403) {
    // The app needs play tokens: mint a short one with the admin token.
    const minted = await api('/tokens', {method: 'POST', body: {action: 'play', app: s.app, stream: s.name, ttl: 900}});
    if (!minted.ok) {
      ui.previewStatus.textContent = `This app needs a play token and none could be made: ${explain(minted)}`;
      return;
    }
    playToken = minted.body.token;
    status = await getJSON(withToken(`/play/${streamPath(s)}/status.json`, playToken));
  }
  if (preview !== mine) return;
  if (!status.ok) {
    ui.previewStatus.textContent = `No preview: ${explain(status)}`;
    return;
  }
  const info = status.body;
  const codecs = [info.video && info.video.codec, info.audio && info.audio.codec, Boolean(info.abr)];
  const f = info.formats.find((x) => !x.refused && !cannotPlay(x.id, ...codecs));
  if (!f) {
    ui.previewStatus.textContent = 'No format this browser can play carries this stream.';
    return;
  }
  mine.engine = createEngine(f.id, ui.previewVideo, withToken(f.url, playToken), {
    hasAudio: Boolean(info.audio) || !info.video,
    hasVideo: Boolean(info.video) || !info.audio,
    onEnd: () => { if (preview === mine) endPreview('The preview stopped: the server closed the connection.'); },
    onError: (err) => { if (preview === mine) endPreview(`The preview stopped: ${err.detail || 'error'}.`); },
  });
  ui.previewStatus.textContent = `${f.label}, muted.`;
  try {
    await mine.engine.start();
    await mine.engine.play();
  } catch (err) {
    if (preview === mine && err && err.name !== 'AbortError') ui.previewStatus.textContent = `No preview: ${err.message || err}`;
  }
}

function endPreview(message) {
  if (preview && preview.engine) preview.engine.destroy();
  preview = null;
  ui.previewStatus.textContent = message;
}

function closePreview() {
  if (preview && preview.engine) preview.engine.destroy();
  preview = null;
  ui.preview.hidden = true;
}

ui.previewClose.addEventListener('click', closePreview);

// ----- start ---------------------------------------------------------------------------------------

(async () => {
  if (!token) {
    showLogin();
    return;
  }
  const result = await api('/streams');
  if (result.ok) showDashboard(result.body);
  else showLogin(result.status === 401 ? 'The saved token was refused; sign in again.' : loginMessage(result));
})();
