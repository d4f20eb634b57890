// The console's recordings: a Record/Stop button per live stream (POST/DELETE /api/v1/streams/APP/NAME/record)
// and the Recordings view (GET /api/v1/recordings, filtered by app and stream, a page at a time with the
// `next` cursor), each recording with play (the player page, /play/vod/ID, with a play token minted for
// the recorded stream when the server can make one, as the preview does), download (/vod/ID.mp4, with a
// play token too: the file is admitted as a play of the stream) and
// delete (asked first).

import {el, explain, formatDuration, withToken} from './common.js';
import {codecName} from './engines.js';

const PAGE = 20;

/** A left click without a modifier: the others (a new tab, a save-as) are left to the browser. */
function plainClick(event) {
  return event.button === 0 && !event.ctrlKey && !event.metaKey && !event.shiftKey && !event.altKey;
}

function formatBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '–';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function formatWhen(iso) {
  const when = new Date(iso);
  return isNaN(when.getTime()) ? '–' : when.toLocaleString();
}

/** Fill `cell` for stream `s` (from GET /api/v1/streams): whether it is recorded, and the button that
 *  starts or stops it. `changed()` is called after the server said yes. */
export function renderRecord(cell, s, {api, report, changed}) {
  const rec = s.recording;
  if (!rec) {
    cell.replaceChildren(el('span', {class: 'muted', text: '–', title: 'this node does not record this stream (record.mode, record.apps)'}));
    return;
  }
  const key = `${s.app}/${s.name}`;
  const state = cell.firstChild && cell.firstChild.dataset ? cell.firstChild.dataset.active : undefined;
  if (state === String(rec.active)) return;  // unchanged: keep the button (and a click in progress)
  const path = `/streams/${encodeURIComponent(s.app)}/${encodeURIComponent(s.name)}/record`;
  const button = el('button', {
    type: 'button', class: rec.active ? 'danger' : undefined, text: rec.active ? 'Stop recording' : 'Record',
    dataset: {action: rec.active ? 'record-stop' : 'record-start'},
  });
  button.addEventListener('click', async () => {
    button.disabled = true;
    const method = rec.active ? 'DELETE' : 'POST';
    const result = await api(path, {method});
    report(result.ok ? '' : `${rec.active ? 'Stopping' : 'Starting'} the recording of ${key} failed: ${explain(result)}`);
    if (result.ok) changed();
    else button.disabled = false;
  });
  cell.replaceChildren(el('div', {dataset: {active: String(rec.active)}},
    el('span', {class: rec.active ? 'badge live' : 'muted', text: rec.active ? 'recording' : 'not recorded'}), ' ', button));
}

/** The Recordings view: `ui` = {form, app, stream, table (tbody), empty, more}; `confirm(text, okLabel)`
 *  resolves true when the operator agrees. */
export class RecordingsView {
  constructor(ui, {api, report, confirm}) {
    this.ui = ui;
    this.api = api;
    this.report = report;
    this.confirm = confirm;
    this.cursor = null;
    this.loading = false;
    ui.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.load();
    });
    ui.more.addEventListener('click', () => this.load({more: true}));
  }

  query(cursor) {
    const params = new URLSearchParams({limit: String(PAGE)});
    const app = this.ui.app.value.trim();
    const stream = this.ui.stream.value.trim();
    if (app) params.set('app', app);
    if (stream) params.set('stream', stream);
    if (cursor) params.set('cursor', cursor);
    return `/recordings?${params}`;
  }

  /** The first page again (the filter may have changed), or with `more` the next page below the rows. */
  async load({more = false} = {}) {
    if (this.loading) return;
    this.loading = true;
    try {
      const result = await this.api(this.query(more ? this.cursor : null));
      if (!result.ok) {
        this.ui.empty.hidden = false;
        this.ui.empty.textContent = result.status === 404 ? `Recording is off on this node: ${explain(result)}`
          : `Recordings could not be read: ${explain(result)}`;
        this.ui.more.hidden = true;
        if (!more) this.ui.table.replaceChildren();
        return;
      }
      const rows = result.body.recordings.map((r) => this.row(r));
      if (more) this.ui.table.append(...rows);
      else this.ui.table.replaceChildren(...rows);
      this.cursor = result.body.next;
      this.ui.more.hidden = !this.cursor;
      this.ui.empty.hidden = this.ui.table.children.length > 0;
      this.ui.empty.textContent = 'No recordings match.';
    } finally {
      this.loading = false;
    }
  }

  /** Refresh the first page unless the operator has paged further (then the rows stay put). */
  refresh() {
    if (!this.cursor || this.ui.table.children.length <= PAGE) this.load();
  }

  row(r) {
    const key = `${r.app}/${r.stream}`;
    const resolution = r.width && r.height ? ` ${r.width}×${r.height}` : '';
    const codecs = [r.video_codec, r.audio_codec].filter(Boolean).map(codecName).join(' + ');
    const play = el('a', {href: `/play/vod/${encodeURIComponent(r.id)}`, target: '_blank', rel: 'noopener',
      class: 'button', text: 'Play', dataset: {action: 'play'}});
    const download = el('a', {href: r.vod.mp4, download: `${r.app}-${r.stream}-${r.id}.mp4`, class: 'button',
      text: 'Download', dataset: {action: 'download'}});
    const remove = el('button', {type: 'button', class: 'danger', text: 'Delete', dataset: {action: 'delete'},
      disabled: r.status === 'recording', title: r.status === 'recording' ? 'stop the recording first' : undefined});
    remove.addEventListener('click', () => this.remove(r, remove));
    play.addEventListener('click', (event) => this.play(event, r, play.href));
    download.addEventListener('click', (event) => this.download(event, r, download));
    return el('tr', {dataset: {recording: r.id}},
      el('td', {dataset: {col: 'stream'}}, el('div', {text: key}), el('div', {class: 'muted', text: `${r.id} on ${r.node}`})),
      el('td', {dataset: {col: 'started'}, text: formatWhen(r.started_at)}),
      el('td', {dataset: {col: 'duration'}, text: formatDuration(r.duration_s)}),
      el('td', {dataset: {col: 'size'}, text: formatBytes(r.bytes)}),
      el('td', {dataset: {col: 'media'}, text: `${codecs || '–'}${resolution}`}),
      el('td', {dataset: {col: 'status'}}, el('span', {class: r.status === 'recording' ? 'badge live' : r.status === 'complete' ? 'badge' : 'badge bad', text: r.status})),
      el('td', {class: 'actions', dataset: {col: 'actions'}}, play, download, remove));
  }

  /** Open the player in a new tab with a play token for the stream (its app may need one); the plain URL
   *  when no token can be made (no token secret on the server). */
  async play(event, r, href) {
    if (!plainClick(event)) return;
    event.preventDefault();
    const tab = window.open('', '_blank');  // now, while the click counts: after an await it may be blocked
    const url = await this.withPlayToken(r, href);
    if (tab) tab.location.href = url;
    else window.open(url, '_blank');
  }

  /** Download the file with a play token for the stream, as play() does: the file is admitted as a play. */
  async download(event, r, link) {
    if (!plainClick(event)) return;
    event.preventDefault();
    const a = el('a', {href: await this.withPlayToken(r, link.href), download: link.download, hidden: true});
    document.body.append(a);
    a.click();
    a.remove();
  }

  /** `href` with a play token for the recording's stream (valid an hour), or as it is when none can be made. */
  async withPlayToken(r, href) {
    const minted = await this.api('/tokens', {method: 'POST', body: {action: 'play', app: r.app, stream: r.stream, ttl: 3600}});
    return minted.ok && minted.body && minted.body.token ? withToken(href, minted.body.token) : href;
  }

  async remove(r, button) {
    const what = `the recording ${r.id} of ${r.app}/${r.stream} (${formatDuration(r.duration_s)}, ${formatBytes(r.bytes)})`;
    if (!await this.confirm(`Delete ${what}? Its file and its catalog row are removed for good.`, 'Delete')) return;
    button.disabled = true;
    const result = await this.api(`/recordings/${encodeURIComponent(r.id)}`, {method: 'DELETE'});
    this.report(result.ok ? '' : `Deleting ${r.id} failed: ${explain(result)}`);
    if (result.ok) this.load();
    else button.disabled = false;
  }
}
