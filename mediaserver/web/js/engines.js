// One playback engine per format, all with the same face: start(), destroy(), kbps(), latency().
//
//   flv, ws-flv   mpegts.js (FLV over a streamed HTTP response or a WebSocket)
//   llhls, hls    hls.js (or the browser itself where it plays HLS natively and has no MSE: iPhone Safari)
//   dash          dash.js
//   mp4           the browser itself: a recording's file as the <video> source (HTTP Range requests)
//   webrtc        WHEP: an RTCPeerConnection receiving H.264 and Opus (engine_webrtc.js)
//
// Engines report the end of the stream (onEnd) and fatal errors (onError); the page decides what to say.
// Over a multivariant playlist or an MPD with several video Representations (ABR), hls.js and dash.js
// pick the rendition; levels() lists them, level() says which plays, pin(id) fixes one (null: the
// player's choice again), and onLevels() is called when any of that changes.
// Latency is measured against the wall clock where the format carries one (HLS program date times, the
// DASH timeline, corrected by the server clock offset), and as buffered media ahead of the playhead for
// FLV, which carries no wall clock.

import {loadScript, VENDOR} from './common.js';
import {Engine, bufferAhead} from './engine_base.js';
import {WebRtcEngine, webrtcCannotPlay} from './engine_webrtc.js';

const MSE_TYPES = {
  h264: 'video/mp4; codecs="avc1.42E01E"',
  hevc: 'video/mp4; codecs="hvc1.1.6.L93.B0"',
  av1: 'video/mp4; codecs="av01.0.05M.08"',
  vp9: 'video/mp4; codecs="vp09.00.10.08"',
  aac: 'audio/mp4; codecs="mp4a.40.2"',
  mp3: 'audio/mpeg',
  opus: 'audio/mp4; codecs="opus"',
};
const CODEC_NAMES = {h264: 'H.264', hevc: 'HEVC', av1: 'AV1', vp9: 'VP9', aac: 'AAC', mp3: 'MP3', opus: 'Opus'};
const FLV_PLAYER_CODECS = new Set(['h264', 'hevc', 'av1', 'aac', 'mp3', 'opus']);  // what mpegts.js reads from FLV

export const LIBRARIES = {flv: VENDOR.mpegts, 'ws-flv': VENDOR.mpegts, llhls: VENDOR.hls, hls: VENDOR.hls, dash: VENDOR.dash};

function mediaSourceClass() {
  return window.ManagedMediaSource || window.MediaSource || null;
}

function nativeHls() {
  return document.createElement('video').canPlayType('application/vnd.apple.mpegurl') !== '';
}

export function codecName(codec) {
  return CODEC_NAMES[codec] || codec;
}

/** Why this browser cannot play `format` for a stream with these codecs, or null when it can (`abr`: the
 * stream's ladder is on, which WebRTC may be served from). */
export function cannotPlay(format, videoCodec, audioCodec, abr = false) {
  if (format === 'webrtc') return webrtcCannotPlay(videoCodec, audioCodec, abr);
  const codecs = [videoCodec, audioCodec].filter(Boolean);
  const isHls = format === 'hls' || format === 'llhls';
  const MS = mediaSourceClass();
  if (!MS) {
    if (isHls && nativeHls()) return null;
    return 'this browser has no Media Source Extensions';
  }
  if (format === 'ws-flv' && !('WebSocket' in window)) return 'this browser has no WebSocket';
  if (format === 'mp4') return null;  // the browser's own player: it says so itself if it cannot decode
  for (const codec of codecs) {
    if ((format === 'flv' || format === 'ws-flv') && !FLV_PLAYER_CODECS.has(codec)) {
      return `mpegts.js cannot play ${codecName(codec)} from FLV`;
    }
    const type = MSE_TYPES[codec];
    if (!type || !MS.isTypeSupported(type)) {
      if (isHls && nativeHls()) continue;
      return `this browser cannot decode ${codecName(codec)}`;
    }
  }
  return null;
}

/** Start fetching the player library for a format before the viewer presses play. */
export function preload(format) {
  const src = LIBRARIES[format];
  return src ? loadScript(src).catch(() => {}) : Promise.resolve();
}

/** A rendition's label from its playlist URL (…/NAME@LABEL/…), "source" for the stream itself. */
export function renditionLabel(url) {
  const match = /@([a-z0-9_-]{1,32})\//.exec(String(url).replace(/%40/gi, '@'));
  return match ? match[1] : 'source';
}


class HlsEngine extends Engine {
  async start() {
    await loadScript(VENDOR.hls);
    const Hls = window.Hls;
    if (this.dead) return;
    if (Hls && Hls.isSupported()) {
      const hls = this.hls = new Hls({
        workerPath: VENDOR.hlsWorker,  // a same-origin worker: the policy allows no blob: scripts
        lowLatencyMode: this.opts.format === 'llhls',
        backBufferLength: 30,
        liveDurationInfinity: true,
        maxLiveSyncPlaybackRate: 1.25,
        debug: Boolean(this.opts.debug),
      });
      // The payload itself may have been handed to the worker (and emptied) by now; the stats keep the size.
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => this.count(((d.part || d.frag).stats || {}).loaded || 0));
      hls.on(Hls.Events.MANIFEST_PARSED, () => this.levelsChanged());
      hls.on(Hls.Events.LEVEL_SWITCHED, () => this.levelsChanged());
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (!d.fatal) return;
        const status = d.response && d.response.code;
        this.fail({detail: d.details || d.type, status: status || null});
      });
      hls.loadSource(this.url);
      hls.attachMedia(this.video);
    } else if (nativeHls()) {
      this.native = true;
      this.video.src = this.url;
    } else {
      this.fail({detail: 'hls.js is not supported in this browser'});
    }
  }

  /** Where playing a live (or DVR) playlist is as close to its edge as hls.js holds it; null when unknown. */
  liveEdge() {
    const hls = this.hls;
    const position = hls ? hls.liveSyncPosition : null;
    return typeof position === 'number' && isFinite(position) ? position : null;
  }

  levels() {
    const levels = this.hls && this.hls.levels ? this.hls.levels : [];
    return levels.map((l, i) => ({
      id: i, label: renditionLabel(l.uri || (Array.isArray(l.url) ? l.url[0] : l.url) || ''),
      width: l.width || 0, height: l.height || 0, bitrate: l.bitrate || 0,
    }));
  }

  level() {
    const hls = this.hls;
    if (!hls) return super.level();
    return {id: hls.currentLevel >= 0 ? hls.currentLevel : null, auto: hls.autoLevelEnabled};
  }

  pin(id) {
    if (!this.hls) return;
    this.hls.nextLevel = id === null ? -1 : id;  // from the next segment on: no flush, no stall
    this.levelsChanged();
  }

  latency() {
    const date = this.hls ? this.hls.playingDate : null;
    if (date && !isNaN(date.getTime())) {
      return {seconds: (this.wallClockNow() - date.getTime()) / 1000,
              method: 'wall clock: now minus the program date time of the picture on screen'};
    }
    if (this.native && typeof this.video.getStartDate === 'function') {
      const start = this.video.getStartDate().getTime();
      if (!isNaN(start)) {
        return {seconds: (this.wallClockNow() - start) / 1000 - this.video.currentTime,
                method: 'wall clock: now minus the program date time of the picture on screen'};
      }
    }
    if (this.hls && typeof this.hls.latency === 'number' && this.hls.latency > 0) {
      return {seconds: this.hls.latency, method: 'behind the live edge of the playlist'};
    }
    return super.latency();
  }

  destroy() {
    super.destroy();
    if (this.hls) this.hls.destroy();
    if (this.native) {
      this.video.removeAttribute('src');
      this.video.load();
    }
  }
}

class DashEngine extends Engine {
  async start() {
    await loadScript(VENDOR.dash);
    const dashjs = window.dashjs;
    if (this.dead) return;
    const player = this.player = dashjs.MediaPlayer().create();
    const settings = {
      streaming: {
        // The MPD names the server's /time; this keeps dash.js from ever asking a public time server.
        utcSynchronization: {
          defaultTimingSource: {scheme: 'urn:mpeg:dash:utc:http-iso:2014', value: `${location.origin}/time`},
        },
      },
    };
    if (dashjs.Debug && dashjs.Debug.LOG_LEVEL_WARNING !== undefined) {
      settings.debug = {logLevel: this.opts.debug ? dashjs.Debug.LOG_LEVEL_DEBUG : dashjs.Debug.LOG_LEVEL_WARNING};
    }
    player.updateSettings(settings);
    const events = dashjs.MediaPlayer.events;
    player.on(events.FRAGMENT_LOADING_COMPLETED, (e) => this.count(e.response ? e.response.byteLength : 0));
    player.on(events.ERROR, (e) => {
      const err = e.error || {};
      this.fail({detail: err.message || String(err.code || 'dash.js error'), status: null});
    });
    player.on(events.PLAYBACK_ENDED, () => this.end('ended'));
    player.on(events.STREAM_INITIALIZED, () => this.levelsChanged());
    player.on(events.QUALITY_CHANGE_RENDERED, (e) => { if (e.mediaType === 'video') this.levelsChanged(); });
    this.started = new Promise((resolve, reject) => {
      player.on(events.PLAYBACK_PLAYING, () => resolve());
      player.on(events.PLAYBACK_NOT_ALLOWED, () => reject(new DOMException('autoplay refused', 'NotAllowedError')));
    });
    this.started.catch(() => {});
    player.initialize(this.video, this.url, true);
  }

  play() {
    // dash.js starts playback itself (autoPlay) once it has attached to the video: a play() before that
    // would go unseen by it, and it would never refresh the manifest.
    return this.started || Promise.resolve();
  }

  levels() {
    let reps = [];
    try { reps = (this.player && this.player.getRepresentationsByType('video')) || []; } catch { reps = []; }
    return reps.map((r) => ({
      id: r.id, label: r.id === 'video' ? 'source' : String(r.id).replace(/^video-/, ''),
      width: r.width || 0, height: r.height || 0, bitrate: r.bandwidth || 0,
    }));
  }

  level() {
    if (!this.player) return super.level();
    let current = null;
    try { current = this.player.getCurrentRepresentationForType('video'); } catch { current = null; }
    const auto = this.player.getSettings().streaming.abr.autoSwitchBitrate.video !== false;
    return {id: current ? current.id : null, auto};
  }

  pin(id) {
    if (!this.player) return;
    this.player.updateSettings({streaming: {abr: {autoSwitchBitrate: {video: id === null}}}});
    if (id !== null) this.player.setRepresentationForTypeById('video', id);
    this.levelsChanged();
  }

  latency() {
    const seconds = this.player ? this.player.getCurrentLiveLatency() : NaN;
    if (typeof seconds === 'number' && isFinite(seconds) && seconds > 0) {
      return {seconds, method: 'wall clock: the DASH timeline, with the clock synchronised to the server'};
    }
    return super.latency();
  }

  destroy() {
    super.destroy();
    if (this.player) this.player.destroy();
  }
}

class FlvEngine extends Engine {
  async start() {
    await loadScript(VENDOR.mpegts);
    const mpegts = window.mpegts;
    if (this.dead) return;
    if (!mpegts.isSupported()) {
      this.fail({detail: 'mpegts.js is not supported in this browser'});
      return;
    }
    const ws = this.opts.format === 'ws-flv';
    const url = ws ? new URL(this.url, location.href.replace(/^http/, 'ws')).href : this.url;
    if (mpegts.LoggingControl && !this.opts.debug) {  // keep warnings and errors, drop the per-segment chatter
      mpegts.LoggingControl.enableVerbose = false;
      mpegts.LoggingControl.enableDebug = false;
      mpegts.LoggingControl.enableInfo = false;
    }
    const player = this.player = mpegts.createPlayer(
      {type: 'flv', isLive: true, url, hasAudio: this.opts.hasAudio, hasVideo: this.opts.hasVideo},
      {
        enableWorker: false,
        enableStashBuffer: false,  // hand data to the decoder as it arrives: lower delay
        lazyLoad: false,
        autoCleanupSourceBuffer: true,
        liveBufferLatencyChasing: true,  // jump ahead when far behind...
        liveBufferLatencyMaxLatency: 3.0,
        liveBufferLatencyMinRemain: 0.5,
        liveSync: true,  // ...and play a little faster when slightly behind
        liveSyncMaxLatency: 1.5,
        liveSyncTargetLatency: 0.8,
        liveSyncPlaybackRate: 1.1,
      },
    );
    player.on(mpegts.Events.ERROR, (type, detail, info) => {
      this.fail({detail: `${type}: ${detail}`, status: info && info.code > 0 ? info.code : null});
    });
    player.on(mpegts.Events.LOADING_COMPLETE, () => this.end('response_ended'));
    player.on(mpegts.Events.STATISTICS_INFO, (s) => {
      this.speedKBps = s.speed;
    });
    player.attachMediaElement(this.video);
    player.load();
  }

  kbps() {
    return typeof this.speedKBps === 'number' && this.speedKBps > 0 ? this.speedKBps * 8.192 : null;
  }

  latency() {
    const ahead = bufferAhead(this.video);
    return ahead === null ? null
      : {seconds: ahead, method: 'media buffered ahead of the playhead (FLV carries no wall clock; the server sends frames as they arrive)'};
  }

  destroy() {
    super.destroy();
    if (this.player) {
      try {
        this.player.pause();
        this.player.unload();
        this.player.detachMediaElement();
      } finally {
        this.player.destroy();
      }
    }
  }
}

/** A whole file (a recording) played by the browser itself: it seeks with HTTP Range requests. */
class FileEngine extends Engine {
  async start() {
    this.onError = () => {
      const err = this.video.error;
      this.fail({detail: err ? (err.message || `media error ${err.code}`) : 'the file cannot be played', status: null});
    };
    this.video.addEventListener('error', this.onError);
    this.video.src = this.url;
  }

  kbps() {
    return null;  // the browser fetches the ranges itself and tells nothing of them
  }

  destroy() {
    super.destroy();
    this.video.removeEventListener('error', this.onError);
    this.video.removeAttribute('src');
    this.video.load();
  }
}

const ENGINES = {
  flv: FlvEngine, 'ws-flv': FlvEngine, llhls: HlsEngine, hls: HlsEngine, dash: DashEngine, mp4: FileEngine, webrtc: WebRtcEngine,
};

export function createEngine(format, video, url, opts) {
  const Cls = ENGINES[format];
  if (!Cls) throw new Error(`unknown format ${format}`);
  // Absolute URLs: players resolve segment URLs against them and some report on them with new URL().
  const absolute = format === 'ws-flv' ? url : new URL(url, location.href).href;
  return new Cls(video, absolute, {...opts, format});
}

/** How far the browser's clock is behind the server's, in ms (from GET /time), or 0 if unknown. */
export async function serverClockOffsetMs() {
  try {
    const before = Date.now();
    const resp = await fetch('/time', {cache: 'no-store'});
    const after = Date.now();
    const server = Date.parse((await resp.text()).trim());
    if (!resp.ok || isNaN(server)) return 0;
    return server - (before + after) / 2;
  } catch {
    return 0;
  }
}
