// What every playback engine shares: the counters behind kbps(), latency as media buffered ahead of the
// playhead (for formats that carry no wall clock), and the end/error reporting that fires once.

export function bufferAhead(video) {
  const b = video.buffered;
  if (!b || !b.length) return null;
  return Math.max(0, b.end(b.length - 1) - video.currentTime);
}

export class Engine {
  /**
   * @param {HTMLVideoElement} video
   * @param {string} url  same-origin path, play token included
   * @param {object} opts {format, hasAudio, hasVideo, clockOffsetMs, onEnd(reason), onError({detail, status})}
   */
  constructor(video, url, opts) {
    this.video = video;
    this.url = url;
    this.opts = opts;
    this.loads = [];  // [time ms, bytes] over the last few seconds
    this.dead = false;
  }

  count(bytes) {
    if (!bytes) return;
    const now = performance.now();
    this.loads.push([now, bytes]);
    while (this.loads.length && this.loads[0][0] < now - 6000) this.loads.shift();
  }

  /** Media bit rate received, kbit/s, over the last seconds. */
  kbps() {
    const now = performance.now();
    const recent = this.loads.filter(([t]) => t >= now - 6000);
    if (recent.length < 2) return null;
    const span = Math.max(1000, now - recent[0][0]);
    const bytes = recent.reduce((sum, [, n]) => sum + n, 0);
    return (bytes * 8) / span;  // bytes*8 / ms = kbit/s
  }

  latency() {
    const ahead = bufferAhead(this.video);
    return ahead === null ? null : {seconds: ahead, method: 'media buffered ahead of the playhead'};
  }

  /** The renditions the player chooses between: [{id, label, width, height, bitrate}]; [] without ABR. */
  levels() {
    return [];
  }

  /** {id: the rendition playing (null if unknown), auto: whether the player chooses}. */
  level() {
    return {id: null, auto: true};
  }

  /** Play rendition `id` from now on, or let the player choose again (null). */
  pin(_id) {}

  levelsChanged() {
    if (!this.dead && this.opts.onLevels) this.opts.onLevels();
  }

  /** Start playing once the engine is set up; rejects with NotAllowedError where autoplay is refused. */
  play() {
    return this.video.play();
  }

  wallClockNow() {
    return Date.now() + (this.opts.clockOffsetMs || 0);
  }

  fail(info) {
    if (this.dead) return;
    this.dead = true;
    this.opts.onError(info);
  }

  end(reason) {
    if (this.dead) return;
    this.dead = true;
    this.opts.onEnd(reason);
  }

  destroy() {
    this.dead = true;
  }
}
