// WebRTC playback over WHEP: an RTCPeerConnection that only receives, its offer POSTed to /APP/NAME/whep
// (with every candidate: the server takes no trickled ones), the answer applied, the remote tracks on the
// <video> element. DELETE on the session's Location ends it when the page stops playing.
//
// The session has ended when the peer connection fails or closes, or its DTLS transport is closed (the server
// closed it: the stream ended, or a moderator kicked the viewer); a connection that stays "disconnected" for
// DISCONNECTED_MS (no answer to ICE consent checks) has ended too.
//
// Latency: Chrome's getStats gives, for the frame being played, the sender's wall-clock time of it
// (inbound-rtp estimatedPlayoutTimestamp, mapped through the server's RTCP sender reports). The server stamps
// a frame's sender report time when it sends it, which is a few ms after the publisher's frame reached it
// (bench/webrtc.py measures that part), so now (on the server's clock, /time) minus that time is the delay
// from the server to the screen. Where a browser gives no such timestamp the readout falls back to what the
// receiver itself adds: its jitter buffer delay plus half the round trip, and says so.

import {Engine} from './engine_base.js';

const GATHER_WAIT_MS = 2000;
const DISCONNECTED_MS = 4000;
const NTP_UNIX_OFFSET_MS = 2208988800000;  // 1900-01-01 to 1970-01-01

/** Why this browser cannot play a stream with these codecs over WebRTC, or null when it can. With `abr` (the
 * stream's ladder is on) the server answers a browser that cannot receive the source's video with an H.264
 * rendition (or a 415 saying why), so receiving H.264 is enough. */
export function webrtcCannotPlay(videoCodec, audioCodec, abr = false) {
  if (!('RTCPeerConnection' in window)) return 'this browser has no WebRTC';
  // Video passes through: H.264 to every browser, AV1 and HEVC (H265 in WebRTC) to those that receive them.
  const mime = {h264: 'video/h264', av1: 'video/av1', hevc: 'video/h265'}[videoCodec];
  const name = {h264: 'H.264', av1: 'AV1', hevc: 'HEVC'}[videoCodec];
  if (videoCodec && !mime && !abr) return 'WebRTC playback carries H.264, AV1 or HEVC video';
  if (videoCodec) {
    const receives = receivesVideo(mime);
    if (receives === false && !(abr && receivesVideo('video/h264') !== false)) {
      return `this browser cannot decode ${name || videoCodec} over WebRTC`;
    }
    if (receives === null && videoCodec !== 'h264' && !abr) {
      return `this browser cannot tell whether it decodes ${name || videoCodec} over WebRTC`;
    }
  }
  if (!videoCodec && !['aac', 'opus'].includes(audioCodec)) return 'WebRTC playback carries AAC or Opus audio';
  return null;
}

/** Whether this browser receives `mime` video over WebRTC: true, false, or null when it cannot tell. */
function receivesVideo(mime) {
  if (!mime) return false;
  if (!window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return null;
  const caps = RTCRtpReceiver.getCapabilities('video');
  if (!caps) return null;
  return caps.codecs.some((c) => c.mimeType.toLowerCase() === mime);
}

export class WebRtcEngine extends Engine {
  constructor(video, url, opts) {
    super(video, url, opts);
    this.samples = [];  // [time ms, bytes received] of the last few seconds
    this.stats = null;
    this.disconnectedAt = null;
  }

  async start() {
    const pc = this.pc = new RTCPeerConnection({iceServers: []});
    if (this.opts.hasVideo) pc.addTransceiver('video', {direction: 'recvonly'});
    if (this.opts.hasAudio) pc.addTransceiver('audio', {direction: 'recvonly'});
    const media = new MediaStream();
    pc.ontrack = (e) => {
      media.addTrack(e.track);
      if (this.video.srcObject !== media) this.video.srcObject = media;
    };
    pc.onconnectionstatechange = () => this.check();
    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered();
    if (this.dead) return;
    const resp = await fetch(this.url, {
      method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: pc.localDescription.sdp, cache: 'no-store',
    });
    if (!resp.ok) {
      let body = null;
      try { body = await resp.json(); } catch { body = null; }
      this.fail({detail: body && body.error ? body.error : `the server answered ${resp.status}`, status: resp.status,
                 body});
      return;
    }
    const location = resp.headers.get('Location');
    this.session = location ? new URL(location, this.url).href : null;
    const answer = await resp.text();
    if (this.dead) { this.hangUp(); return; }
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    this.timer = setInterval(() => this.poll(), 1000);
  }

  /** Wait until the browser has gathered its candidates (host candidates take a few ms), at most GATHER_WAIT_MS. */
  gathered() {
    const pc = this.pc;
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, GATHER_WAIT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
      });
    });
  }

  check() {
    const pc = this.pc;
    if (!pc || this.dead) return;
    const state = pc.connectionState;
    const dtlsClosed = pc.getReceivers().some((r) => r.transport && r.transport.state === 'closed');
    if (state === 'failed' || state === 'closed' || dtlsClosed) {
      this.end(state === 'failed' ? 'ice_failed' : 'response_ended');
    } else if (state === 'disconnected') {
      this.disconnectedAt = this.disconnectedAt || performance.now();
      if (performance.now() - this.disconnectedAt > DISCONNECTED_MS) this.end('response_ended');
    } else {
      this.disconnectedAt = null;
    }
  }

  async poll() {
    this.check();
    if (this.dead || !this.pc) return;
    const report = await this.pc.getStats();
    const now = performance.now();
    let bytes = 0;
    let video = null;
    let audio = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        bytes += s.bytesReceived || 0;
        if (s.kind === 'video') video = s;
        if (s.kind === 'audio') audio = s;
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        pair = s;
      }
    });
    this.samples.push([now, bytes]);
    while (this.samples.length > 6) this.samples.shift();
    this.stats = {video, audio, pair, at: Date.now()};
  }

  /** Frames decoded so far (inbound-rtp framesDecoded), for the page and tests. */
  framesDecoded() {
    return this.stats && this.stats.video ? this.stats.video.framesDecoded || 0 : 0;
  }

  kbps() {
    const s = this.samples;
    if (s.length < 2) return null;
    const [t0, b0] = s[0];
    const [t1, b1] = s[s.length - 1];
    return t1 > t0 ? ((b1 - b0) * 8) / (t1 - t0) : null;
  }

  latency() {
    const st = this.stats;
    if (!st || !st.video) return null;
    // Chrome gives the playout time of audio (video plays in sync with it); take video's where it is given.
    for (const [track, what] of [[st.video, 'frame on screen'], [st.audio, 'sound playing (video is in sync)']]) {
      const played = track ? track.estimatedPlayoutTimestamp : undefined;
      if (typeof played === 'number' && played > NTP_UNIX_OFFSET_MS) {
        const serverNow = st.at + (this.opts.clockOffsetMs || 0);
        return {seconds: Math.max(0, (serverNow - (played - NTP_UNIX_OFFSET_MS)) / 1000),
                method: `wall clock: now (on the server's clock) minus the server's send time of the ${what} `
                  + '(RTCP sender reports, getStats estimatedPlayoutTimestamp)'};
      }
    }
    const emitted = st.video.jitterBufferEmittedCount;
    if (emitted) {
      const rtt = st.pair && st.pair.currentRoundTripTime ? st.pair.currentRoundTripTime : 0;
      return {seconds: st.video.jitterBufferDelay / emitted + rtt / 2,
              method: 'the receiver\'s jitter buffer delay plus half the round trip (this browser gives no '
                + 'sender time of the frame on screen)'};
    }
    return null;
  }

  end(reason) {
    // The server ended it (or will, seeing the connection fail): nothing to DELETE.
    if (!this.dead) this.session = null;
    super.end(reason);
  }

  hangUp() {
    if (this.session) {
      fetch(this.session, {method: 'DELETE', keepalive: true}).catch(() => {});
      this.session = null;
    }
  }

  destroy() {
    super.destroy();
    clearInterval(this.timer);
    this.hangUp();
    if (this.pc) this.pc.close();
    this.pc = null;
    this.video.srcObject = null;
  }
}
