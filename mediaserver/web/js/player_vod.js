// The player page for what was recorded: a recording, /play/vod/ID[?format=hls|dash|mp4&token=T&autoplay=0&t=S],
// and the DVR of a stream being recorded, /play/APP/NAME?dvr=1[&token=T] (its dvr.m3u8 with hls.js: the
// recorded window, scrubbed back and forth, up to the live edge).
//
// A recording plays as HLS (hls.js over the byte-range playlist), DASH (dash.js over the static manifest)
// or its MP4 file (the browser's own player, with HTTP Range); all three seek. The video element has its
// controls; `t` starts at that second. The play token in the page URL goes with every request.
//
// States (#status[data-state], as on the live page): loading, ready (press play), connecting, playing,
// buffering, paused, ended, refused (no or a wrong token, an unknown recording), error.

import {NAME, el, explain, formatKbps, sleep, withToken} from './common.js';
import {createEngine} from './engines.js';

const ID = /^[A-Za-z0-9_-]{1,64}$/;
const LIVE_SLACK_S = 6;  // this close to where hls.js holds the live edge (3 segments back) counts as live
export const VOD_FORMATS = [
  {id: 'hls', label: 'HLS', url: (id) => `/vod/${id}/index.m3u8`},
  {id: 'dash', label: 'DASH', url: (id) => `/vod/${id}/manifest.mpd`},
  {id: 'mp4', label: 'MP4 file', url: (id) => `/vod/${id}.mp4`},
];

/** Play a recording (app "vod", name its id) or a stream's DVR window; `ui` is the player page's elements. */
export function playRecorded(ui, {app, name, query}) {
  const token = query.get('token') || '';
  const autoplay = query.get('autoplay') !== '0';
  const debug = query.get('debug') === '1';
  const startAt = Number.parseFloat(query.get('t') || '');
  const dvr = app !== 'vod';
  const subject = dvr ? `${app}/${name} (DVR)` : `recording ${name}`;
  const formats = dvr
    ? [{id: 'hls', label: 'HLS', url: () => `/${encodeURIComponent(app)}/${encodeURIComponent(name)}/dvr.m3u8`}]
    : VOD_FORMATS;
  let format = formats.some((f) => f.id === query.get('format')) ? query.get('format') : formats[0].id;
  let engine = null;
  let phase = 'loading';
  let clickedAt = null;

  function setState(state, message, hint, {showPlay = false, overlay = !['playing', 'paused', 'buffering'].includes(state)} = {}) {
    phase = state;
    ui.status.dataset.state = state;
    ui.status.replaceChildren(message, hint ? el('span', {class: 'hint', text: hint}) : '');
    ui.overlayText.textContent = message;
    ui.overlay.hidden = !overlay;
    ui.play.hidden = !showPlay;
  }

  const current = () => formats.find((f) => f.id === format);
  const urlOf = (f) => withToken(f.url(name), token);

  function renderFormats() {
    ui.formats.replaceChildren(...formats.map((f) => {
      const button = el('button', {
        type: 'button', text: f.label, 'aria-pressed': String(f.id === format), dataset: {format: f.id},
        title: `Play as ${f.label}`,
      });
      button.addEventListener('click', () => {
        format = f.id;
        const params = new URLSearchParams(location.search);
        params.set('format', f.id);
        history.replaceState(null, '', `${location.pathname}?${params}`);
        renderFormats();
        start(ui.video.currentTime || 0);
      });
      return button;
    }));
  }

  function stopEngine() {
    if (!engine) return;
    const old = engine;
    engine = null;
    try { old.destroy(); } catch (err) { console.warn('player teardown', err); }
  }

  async function start(at) {
    stopEngine();
    const f = current();
    ui.stat.format.textContent = f.label;
    clickedAt = performance.now();
    setState('connecting', `Loading ${subject} (${f.label})…`);
    const mine = engine = createEngine(f.id, ui.video, urlOf(f), {
      hasAudio: true, hasVideo: true, debug,
      onEnd: () => { if (engine === mine) setState('ended', `The end of ${subject}.`, 'Press play to watch it again.', {showPlay: true}); },
      onError: (err) => { if (engine === mine) failed(f, err); },
    });
    if (at > 0) {
      ui.video.addEventListener('loadedmetadata', () => { if (engine === mine) ui.video.currentTime = at; }, {once: true});
    }
    try {
      await mine.start();
      if (engine === mine) await mine.play();
    } catch (err) {
      if (engine !== mine) return;
      if (err && err.name === 'NotAllowedError') {
        setState('ready', `${subject} is ready. Press play to watch (${f.label}).`, null, {showPlay: true});
      } else if (!err || err.name !== 'AbortError') {
        failed(f, {detail: String(err && err.message || err)});
      }
    }
  }

  async function failed(f, err) {
    stopEngine();
    const diagnosis = await probe(f);
    if (diagnosis && diagnosis.status >= 400) {
      setState('refused', `The server refused ${subject} (${diagnosis.status}): ${explain(diagnosis)}`,
        formats.length > 1 ? 'Choose another format above.' : null);
      return;
    }
    setState('error', `The ${f.label} player stopped: ${err.detail || 'unknown error'}${err.status ? ` (HTTP ${err.status})` : ''}.`,
      formats.length > 1 ? 'Press play to try again, or choose another format above.' : 'Press play to try again.',
      {showPlay: true});
  }

  /** The format's URL asked for its first byte only: its JSON answer says why it was refused. */
  async function probe(f) {
    try {
      const resp = await fetch(urlOf(f), {cache: 'no-store', headers: {Range: 'bytes=0-0'}});
      let body = null;
      if (!resp.ok && (resp.headers.get('Content-Type') || '').includes('application/json')) {
        body = await resp.json().catch(() => null);
      }
      return {ok: resp.ok, status: resp.status, body};
    } catch {
      return null;
    }
  }

  ui.video.addEventListener('playing', () => {
    if (!engine) return;
    if (clickedAt !== null) {
      const ms = Math.round(performance.now() - clickedAt);
      clickedAt = null;
      ui.stat.startup.textContent = `${ms} ms`;
      ui.stat.startup.dataset.ms = String(ms);
    }
    setState('playing', `Playing ${subject} (${current().label}).`, null);
  });
  ui.video.addEventListener('waiting', () => {
    if (engine && phase === 'playing') setState('buffering', `Buffering ${subject}…`, null);
  });
  ui.video.addEventListener('pause', () => {
    if (engine && phase === 'playing' && !ui.video.ended) setState('paused', `${subject} is paused.`, null);
  });
  ui.video.addEventListener('ended', () => {
    if (engine) setState('ended', `The end of ${subject}.`, 'Press play to watch it again.', {showPlay: true});
  });
  ui.play.addEventListener('click', () => {
    if (engine && (phase === 'ready' || phase === 'ended')) {
      clickedAt = performance.now();
      if (phase === 'ended') ui.video.currentTime = 0;
      ui.video.play().catch(() => {});
      return;
    }
    start(0);
  });

  /** Where hls.js holds the DVR window's live edge, or null before it knows. */
  const liveEdge = () => (engine && typeof engine.liveEdge === 'function' ? engine.liveEdge() : null);

  /** Seconds behind the live edge of the DVR window, or null before the player knows it. */
  function behindLive() {
    const edge = liveEdge();
    return edge === null ? null : Math.max(0, edge - ui.video.currentTime);
  }

  // The DVR's "Go live": shown pressed while playing at the edge; a press jumps to the edge.
  function showLive(behind = behindLive()) {
    ui.goLive.hidden = behind === null;
    const live = behind !== null && behind < LIVE_SLACK_S;
    ui.goLive.setAttribute('aria-pressed', String(live));
    ui.goLive.textContent = live ? '● Live' : `Go live (${Math.round(behind || 0)} s behind)`;
  }

  ui.goLive.addEventListener('click', () => {
    const edge = liveEdge();
    if (edge === null) return;
    ui.video.currentTime = edge;
    ui.video.play().catch(() => {});
    showLive();
  });

  async function updateStats() {
    for (;;) {
      const v = ui.video;
      ui.stat.resolution.textContent = v.videoWidth ? `${v.videoWidth}×${v.videoHeight}` : '–';
      const q = typeof v.getVideoPlaybackQuality === 'function' ? v.getVideoPlaybackQuality() : null;
      ui.stat.dropped.textContent = q ? `${q.droppedVideoFrames} of ${q.totalVideoFrames}` : '–';
      ui.stat.bitrate.textContent = engine ? formatKbps(engine.kbps()) : '–';
      const behind = dvr ? behindLive() : null;
      ui.stat.latency.textContent = isFinite(v.duration) ? `${v.currentTime.toFixed(1)} of ${v.duration.toFixed(1)} s`
        : behind !== null ? `${behind.toFixed(1)} s behind live` : '–';
      if (dvr) showLive(behind);
      await sleep(1000);
    }
  }

  document.title = `${subject} · mediaserver`;
  ui.title.textContent = dvr ? `${app}/${name}, recorded window` : `Recording ${name}`;
  if (!(dvr ? NAME.test(app) && NAME.test(name) : ID.test(name))) {
    setState('error', `“${name}” is not a recording id.`,
      'Recording URLs look like /play/vod/ID; the console and GET /api/v1/recordings list them.');
    return;
  }
  ui.video.controls = true;  // a recording is scrubbed: the browser's own seek bar
  ui.stat.latencyLabel.textContent = 'Position';
  renderFormats();
  if (autoplay) {
    start(isFinite(startAt) ? startAt : 0);
  } else {
    ui.stat.format.textContent = current().label;
    setState('ready', `${subject} is ready. Press play to watch (${current().label}).`, null, {showPlay: true});
  }
  updateStats();

  window.mediaserverPlayer = {
    get phase() { return phase; },
    get format() { return format; },
    get recorded() { return dvr ? 'dvr' : 'vod'; },
    get behindLive() { return dvr ? behindLive() : null; },
  };
}
