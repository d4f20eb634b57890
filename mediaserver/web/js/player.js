// The player page, /play/APP/NAME[?format=ID&token=T&autoplay=0].
//
// It asks /play/APP/NAME/status.json what the stream is (live, reconnecting, offline), which codecs it
// carries and which formats the server refuses for them (with the server's reason), picks the first
// format in the server's order that this browser can play (or the one in the URL), and plays it. It
// keeps asking every few seconds, so it can say when the publisher drops, when the stream ends, and
// start by itself when an offline stream goes live. A play token in the page URL is passed to every
// request for the stream.
//
// ABR: when the server says the stream's ladder is on (status.json `abr`), the page plays a format whose
// player picks the rendition (LL-HLS over cmaf.m3u8, DASH, or HLS over master.m3u8) unless the URL names
// a format, and shows a quality selector ("Auto" and each rendition) and the rendition on screen.
//
// Cluster: the page first asks /api/v1/route/APP/NAME for the least loaded edge and, when that is another
// host, moves to the same page there (the same query plus routed=1, so that page stays); standalone, or when
// the route fails or is slow, it plays from this host. See routeToEdge().
//
// Recordings (/play/vod/ID) and the DVR window of a stream being recorded (?dvr=1) are played by
// player_vod.js on this same page.
//
// States (shown in #status[data-state]): loading, offline, ready (press play), connecting, playing,
// buffering, reconnecting (publisher gone, within the grace period), ended, stopped (the server closed
// the connection while the stream is live), refused (the server or the browser cannot play this format,
// or a play token is missing), error.

import {NAME, el, explain, formatKbps, getJSON, sleep, withToken} from './common.js';
import {cannotPlay, codecName, createEngine, preload, serverClockOffsetMs} from './engines.js';
import {QualityMenu} from './player_levels.js';
import {playRecorded} from './player_vod.js';

// Formats whose players choose between the renditions of a ladder, in the server's order of preference.
const ABR_FORMATS = new Set(['llhls', 'dash', 'hls']);
// A stream name, or a rendition's: NAME@LABEL.
const LABEL = /^[a-z0-9_-]{1,32}$/;

const $ = (id) => document.getElementById(id);
const ui = {
  title: $('title'), video: $('video'), overlay: $('overlay'), overlayText: $('overlay-text'), play: $('play'),
  status: $('status'), formats: $('formats'), unavailable: $('unavailable'), unmute: $('unmute'),
  goLive: $('go-live'), latencyMethod: $('latency-method'), quality: $('quality'),
  stat: {
    format: $('stat-format'), latency: $('stat-latency'), bitrate: $('stat-bitrate'),
    resolution: $('stat-resolution'), dropped: $('stat-dropped'), startup: $('stat-startup'),
    rendition: $('stat-rendition'), latencyLabel: $('stat-latency-label'),
  },
};
const quality = new QualityMenu(ui.quality, ui.stat.rendition);

const [, , rawApp = '', rawName = ''] = location.pathname.split('/');
const app = safeDecode(rawApp);
const name = safeDecode(rawName);
const stream = `${app}/${name}`;
const query = new URLSearchParams(location.search);
const token = query.get('token') || '';
const autoplay = query.get('autoplay') !== '0';
const debug = query.get('debug') === '1';  // the player libraries log in detail to the browser console
const recorded = app === 'vod' || query.get('dvr') === '1';  // a recording, or a stream's DVR window

let info = null;          // the last status.json
let format = query.get('format');
let engine = null;
let phase = 'loading';
let everPlayed = false;
let clickedAt = null;     // performance.now() when play was asked for
let clockOffsetMs = 0;
let pollTimer = null;

function safeDecode(text) {
  try { return decodeURIComponent(text); } catch { return ''; }
}

function sentence(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
}

function setState(state, message, hint, {showPlay = false, overlay = state !== 'playing'} = {}) {
  phase = state;
  ui.status.dataset.state = state;
  ui.status.replaceChildren(message, hint ? el('span', {class: 'hint', text: sentence(hint)}) : '');
  ui.overlayText.textContent = message;
  ui.overlay.hidden = !overlay;
  ui.play.hidden = !showPlay;
}

function formatById(id) {
  return info ? info.formats.find((f) => f.id === id) : null;
}

function whyNot(f) {
  if (f.refused) return `${f.refused.error}`;
  return cannotPlay(f.id, info.video && info.video.codec, info.audio && info.audio.codec, Boolean(info.abr));
}

function chooseFormat() {
  if (format && formatById(format)) return format;
  const candidates = info.abr ? info.formats.filter((f) => ABR_FORMATS.has(f.id)) : [];
  // WebRTC (lowest delay, and no Media Source Extensions needed) where the stream can be played that way.
  candidates.push(...info.formats.filter((f) => f.id === 'webrtc'));
  const playable = candidates.find((f) => !whyNot(f)) || info.formats.find((f) => !whyNot(f));
  return playable ? playable.id : null;
}

/** The URL a format plays: with ABR, plain HLS plays the multivariant master.m3u8 over the ladder. */
// The page chose its host through the route already, so an edge at its ceiling serves these requests
// (balanced=1) rather than redirect them to another host, which this page's Content-Security-Policy forbids.
function urlOf(f) {
  const url = info.abr && f.id === 'hls' && f.url.endsWith('/index.m3u8') ? `${f.url.slice(0, -10)}master.m3u8` : f.url;
  return `${url}${url.includes('?') ? '&' : '?'}balanced=1`;
}

function renderFormats() {
  ui.formats.replaceChildren();
  ui.unavailable.replaceChildren();
  for (const f of info.formats) {
    const reason = info.state === 'offline' ? null : whyNot(f);
    const button = el('button', {
      type: 'button', text: f.label, 'aria-pressed': String(f.id === format), dataset: {format: f.id},
      disabled: Boolean(reason), title: reason || `Play as ${f.label}`,
    });
    button.addEventListener('click', () => switchTo(f.id));
    ui.formats.append(button);
    if (reason) ui.unavailable.append(el('li', {text: `${f.label}: ${reason}`}));
  }
}

function switchTo(id) {
  format = id;
  const params = new URLSearchParams(location.search);
  params.set('format', id);
  history.replaceState(null, '', `${location.pathname}?${params}`);
  renderFormats();
  start();
}

async function fetchStatus() {
  const path = `/play/${encodeURIComponent(app)}/${encodeURIComponent(name)}/status.json`;
  const result = await getJSON(withToken(path, token));
  if (result.ok && result.body.webrtc) result.body.formats.push(result.body.webrtc);  // listed last, preferred
  return result;
}

// ----- playback ------------------------------------------------------------------------------------

function stopEngine() {
  quality.detach();
  if (engine) {
    const old = engine;
    engine = null;
    try { old.destroy(); } catch (err) { console.warn('player teardown', err); }
  }
}

async function start() {
  stopEngine();
  const f = formatById(format);
  if (!f) return;
  ui.stat.format.textContent = f.label;
  if (f.refused) {
    setState('refused', `The server refuses ${f.label} for ${stream}: ${f.refused.error}.`,
      `${f.refused.hint}. Choose another format above.`);
    return;
  }
  const reason = whyNot(f);
  if (reason) {
    setState('refused', `${f.label} cannot play here: ${reason}.`, 'Choose another format above.');
    return;
  }
  clickedAt = performance.now();
  ui.stat.startup.textContent = '…';
  delete ui.stat.startup.dataset.ms;
  setState('connecting', `Connecting to ${stream} over ${f.label}…`);
  const mine = engine = createEngine(f.id, ui.video, withToken(urlOf(f), token), {
    hasAudio: Boolean(info.audio) || !info.video,
    hasVideo: Boolean(info.video) || !info.audio,
    clockOffsetMs,
    debug,
    onLevels: () => { if (engine === mine) quality.render(); },
    onEnd: (why) => { if (engine === mine) onEngineEnd(why); },
    onError: (err) => { if (engine === mine) onEngineError(f, err); },
  });
  quality.attach(mine);
  try {
    await mine.start();
  } catch (err) {
    if (engine === mine) onEngineError(f, {detail: String(err && err.message || err)});
    return;
  }
  if (engine !== mine) return;
  try {
    await mine.play();
  } catch (err) {
    if (engine === mine && err && err.name === 'NotAllowedError') {
      setState('ready', `${stream} is live. Press play to watch (${f.label}).`, null, {showPlay: true});
    }
    // AbortError: the source changed while starting; the new start reports for itself.
  }
}

async function onEngineEnd(why) {
  stopEngine();
  const result = await fetchStatus();
  if (result.ok) info = result.body;
  if (!result.ok || info.state === 'offline') {
    showEnded();
  } else {
    setState('stopped', `The server closed the connection, but ${stream} is still live.`,
      why === 'ended' ? 'The playlist ended.' : 'A moderator may have disconnected viewers. Press play to watch again.',
      {showPlay: true});
  }
}

async function onEngineError(f, err) {
  stopEngine();
  const result = await fetchStatus();
  if (result.ok) {
    info = result.body;
    if (info.state === 'offline') {
      if (everPlayed) showEnded(); else showOffline();
      return;
    }
    renderFormats();
  }
  // Ask the format's URL itself: its JSON answer names why it was refused (WHEP's POST answered already).
  const diagnosis = f.transport === 'whep' ? (err.status ? {ok: false, status: err.status, body: err.body} : null)
    : await probe(f);
  if (diagnosis && !diagnosis.ok && diagnosis.status >= 400) {
    setState('refused', `The server refused ${f.label} for ${stream} (${diagnosis.status}): ${explain(diagnosis)}`,
      'Choose another format above.');
    return;
  }
  setState('error', `The ${f.label} player stopped: ${err.detail || 'unknown error'}${err.status ? ` (HTTP ${err.status})` : ''}.`,
    'Press play to try again, or choose another format above.', {showPlay: true});
}

/** GET the format's URL (the HTTP one for WebSocket-FLV) just far enough to read the status and error. */
async function probe(f) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 8000);
  try {
    const resp = await fetch(withToken(urlOf(f), token), {cache: 'no-store', signal: controller.signal});
    let body = null;
    if (!resp.ok && (resp.headers.get('Content-Type') || '').includes('application/json')) {
      body = await resp.json().catch(() => null);
    }
    controller.abort();  // an FLV answer would stream for ever
    return {ok: resp.ok, status: resp.status, body};
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

function showOffline() {
  stopEngine();
  setState('offline', `${stream} is offline: nobody is publishing it right now.`,
    'This page starts playing by itself when it goes live.');
}

function showEnded() {
  stopEngine();
  setState('ended', `The stream ${stream} has ended; it is offline now.`,
    'This page starts playing again by itself if it comes back.');
}

// ----- the video element ---------------------------------------------------------------------------

ui.video.addEventListener('playing', () => {
  if (!engine) return;
  everPlayed = true;
  if (clickedAt !== null) {
    const ms = Math.round(performance.now() - clickedAt);
    clickedAt = null;
    ui.stat.startup.textContent = `${ms} ms`;
    ui.stat.startup.dataset.ms = String(ms);
  }
  const f = formatById(format);
  if (info && info.state === 'reconnecting') showReconnecting();
  else setState('playing', `Playing ${stream} (${f ? f.label : format}).`, null);
});

ui.video.addEventListener('waiting', () => {
  if (engine && (phase === 'playing')) setState('buffering', `Buffering ${stream}…`, null, {overlay: false});
});

ui.video.addEventListener('ended', () => {
  if (engine) onEngineEnd('ended');
});

ui.play.addEventListener('click', () => {
  if (phase === 'ended' || phase === 'offline') return;
  if (engine && phase === 'ready') {
    clickedAt = performance.now();
    setState('connecting', `Connecting to ${stream}…`);
    ui.video.play().catch(() => {});
    return;
  }
  start();
});

ui.unmute.addEventListener('click', () => {
  ui.video.muted = !ui.video.muted;
  ui.unmute.textContent = ui.video.muted ? 'Unmute' : 'Mute';
});

function showReconnecting() {
  const grace = info && info.reconnect_grace_s;
  setState('reconnecting', `The publisher of ${stream} disconnected; waiting for it to come back.`,
    grace ? `The stream ends if it is not back within ${grace} s.` : null, {overlay: false});
}

// ----- stats ---------------------------------------------------------------------------------------

function updateStats() {
  const v = ui.video;
  ui.stat.resolution.textContent = v.videoWidth ? `${v.videoWidth}×${v.videoHeight}` : '–';
  const quality = typeof v.getVideoPlaybackQuality === 'function' ? v.getVideoPlaybackQuality() : null;
  ui.stat.dropped.textContent = quality ? `${quality.droppedVideoFrames} of ${quality.totalVideoFrames}` : '–';
  if (!engine) {
    ui.stat.latency.textContent = '–';
    ui.stat.bitrate.textContent = '–';
    return;
  }
  const latency = engine.latency();
  if (latency && isFinite(latency.seconds)) {
    ui.stat.latency.textContent = `${latency.seconds.toFixed(1)} s`;
    ui.stat.latency.dataset.seconds = latency.seconds.toFixed(3);
    ui.stat.latency.title = latency.method;
    ui.latencyMethod.textContent = `Latency: ${latency.method}.`;
  } else {
    ui.stat.latency.textContent = '–';
  }
  ui.stat.bitrate.textContent = formatKbps(engine.kbps());
}

// ----- status polling ------------------------------------------------------------------------------

async function poll() {
  const result = await fetchStatus();
  if (!result.ok) {
    if (result.status === 401 || result.status === 403 || result.status === 400) {
      stopEngine();
      setState('refused', `${stream} cannot be played: ${explain(result)}`);
      return false;  // nothing will change by asking again
    }
    return true;  // the server is restarting or unreachable: keep asking
  }
  const before = info ? info.state : null;
  info = result.body;
  const state = info.state;
  if (['offline', 'ended', 'loading', 'refused'].includes(phase) && state !== 'offline') {
    if (phase === 'refused' && before !== 'offline') return true;  // the viewer chooses another format
    format = chooseFormat() || format;
    renderFormats();
    if (!format) {
      setState('refused', `No format that carries ${stream} can play in this browser.`, unavailableText());
    } else if (autoplay || phase === 'ended') {
      start();
    } else {
      preload(format);
      setState('ready', `${stream} is live. Press play to watch.`, null, {showPlay: true});
    }
  } else if (state === 'offline' && ['playing', 'buffering', 'connecting', 'reconnecting', 'ready', 'stopped'].includes(phase)) {
    if (everPlayed) showEnded(); else showOffline();
    renderFormats();
  } else if (state === 'reconnecting' && ['playing', 'buffering'].includes(phase)) {
    showReconnecting();
  } else if (state === 'live' && phase === 'reconnecting' && engine) {
    const f = formatById(format);
    setState('playing', `Playing ${stream} (${f ? f.label : format}).`, null);
  } else if (before !== state || phase === 'loading') {
    renderFormats();
  }
  if (phase === 'loading' && state === 'offline') showOffline();
  return true;
}

function unavailableText() {
  return info.formats.map((f) => `${f.label}: ${whyNot(f) || 'available'}`).join('; ');
}

async function pollLoop() {
  for (;;) {
    let again = true;
    try {
      again = await poll();
    } catch (err) {
      console.warn('status poll', err);
    }
    if (!again) return;
    await sleep(phase === 'playing' || phase === 'buffering' ? 5000 : 2000);
  }
}

// ----- start ---------------------------------------------------------------------------------------

const ROUTE_TIMEOUT_MS = 3000;

/** Move to this page on the edge the server routes viewers to; false when this host is the one to play from. */
async function routeToEdge() {
  if (query.get('routed') === '1') return false;  // routed here already: never bounce between edges
  const path = `/api/v1/route/${encodeURIComponent(app)}/${encodeURIComponent(name)}`;
  const options = typeof AbortSignal.timeout === 'function' ? {signal: AbortSignal.timeout(ROUTE_TIMEOUT_MS)} : {};
  const result = await getJSON(withToken(path, token), options);
  if (!result.ok || !result.body || result.body.standalone || typeof result.body.player !== 'string') return false;
  let target;
  try {
    target = new URL(result.body.player, location.href);
  } catch {
    return false;
  }
  if (!/^https?:$/.test(target.protocol) || target.origin === location.origin) return false;
  for (const [key, value] of query) target.searchParams.set(key, value);
  target.searchParams.set('routed', '1');
  setState('loading', `Moving to the edge that serves ${stream}…`);
  location.replace(target.href);
  return true;
}

async function boot() {
  if (recorded) {
    playRecorded(ui, {app, name, query});
    return;
  }
  document.title = `${stream} · mediaserver`;
  ui.title.textContent = stream;
  const [base, label] = name.split('@', 2);
  if (!NAME.test(app) || !NAME.test(base) || (name.includes('@') && !LABEL.test(label || ''))) {
    setState('error', `“${stream}” is not a stream name.`,
      'Player URLs look like /play/APP/NAME (or NAME@LABEL for one rendition), e.g. /play/live/studio; names are letters, digits, _ - . ~');
    return;
  }
  if (await routeToEdge()) return;
  serverClockOffsetMs().then((ms) => { clockOffsetMs = ms; });
  const first = await fetchStatus();
  if (!first.ok) {
    if (first.status === 401 || first.status === 403) {
      setState('refused', `${stream} cannot be played: ${explain(first)}`);
      return;
    }
    setState('error', `The server could not tell about ${stream}: ${explain(first)}`, 'Retrying…');
  } else {
    info = first.body;
    format = chooseFormat();
    renderFormats();
    if (info.state === 'offline') {
      showOffline();
    } else if (!format) {
      setState('refused', `No format that carries ${stream} can play in this browser.`, unavailableText());
    } else if (autoplay) {
      start();
    } else {
      preload(format);
      const f = formatById(format);
      ui.stat.format.textContent = f.label;
      setState('ready', `${stream} is live. Press play to watch (${f.label}).`, null, {showPlay: true});
    }
  }
  setInterval(updateStats, 1000);
  if (pollTimer === null) {
    pollTimer = true;
    await sleep(2000);
    pollLoop();
  }
}

boot();

// Kept for people and tests poking at the page from the console: what is playing and how.
if (!recorded) window.mediaserverPlayer = {
  get phase() { return phase; },
  get format() { return format; },
  get peerConnection() { return engine && engine.pc ? engine.pc : null; },  // WebRTC: for getStats()
  get status() { return info; },
  get levels() { return engine ? engine.levels() : []; },
  get level() { return engine ? engine.level() : null; },
  pin(id) { if (engine) engine.pin(id); },
  codecName,
};
