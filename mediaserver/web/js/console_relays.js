// The console's Pushes column: a stream's pushes to other servers (restreaming) with their state, last
// error, bit rate and reconnects, a Remove button each, and a form to push the stream to a new URL (the
// admin API's /streams/APP/NAME/relays). URLs come back from the server with the stream key as ***.

import {el, explain, formatKbps} from './common.js';

/** Build the cell once (its form keeps what the operator is typing across refreshes); returns
 *  update(s) that shows stream `s`'s pushes (from GET /api/v1/streams). */
export function relaysCell(cell, {api, report}) {
  const list = el('div', {dataset: {col: 'relay-list'}});
  const input = el('input', {type: 'text', placeholder: 'rtmp(s)://host/app/key', 'aria-label': 'Push to URL',
                             dataset: {field: 'relay-url'}, autocomplete: 'off', spellcheck: 'false'});
  const add = el('button', {type: 'submit', text: 'Push', dataset: {action: 'relay-add'}});
  const form = el('form', {class: 'relay-add'}, input, add);
  let stream = null;
  const path = () => `/streams/${encodeURIComponent(stream.app)}/${encodeURIComponent(stream.name)}/relays`;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!stream || !input.value.trim()) return;
    add.disabled = true;
    const result = await api(path(), {method: 'POST', body: {url: input.value.trim()}});
    add.disabled = false;
    if (result.ok) input.value = '';
    report(result.ok ? '' : `Pushing ${stream.app}/${stream.name} failed: ${explain(result)}`);
  });
  cell.append(list, form);
  return (s) => {
    stream = s;
    list.replaceChildren(...(s.relays || []).map((r) => {
      const facts = [r.state, r.state === 'live' ? formatKbps(r.bitrate_kbps) : null,
        r.reconnects ? `${r.reconnects} reconnect${r.reconnects === 1 ? '' : 's'}` : null].filter(Boolean).join(' · ');
      const remove = el('button', {type: 'button', class: 'danger', text: 'Remove', dataset: {action: 'relay-remove'}});
      remove.addEventListener('click', async () => {
        remove.disabled = true;
        const result = await api(`${path()}/${encodeURIComponent(r.id)}`, {method: 'DELETE'});
        report(result.ok ? '' : `Removing push ${r.id} failed: ${explain(result)}`);
      });
      return el('div', {class: 'relay', dataset: {relay: r.id, state: r.state}},
        el('div', {class: 'muted', text: r.url}),
        el('div', {dataset: {col: 'relay-state'}, text: facts}),
        r.error ? el('div', {class: 'error', dataset: {col: 'relay-error'}, text: r.error}) : null,
        r.state !== 'stopped' ? remove : null);
    }));
  };
}

/** A byte count as B, kB, MB or GB. */
function formatBytes(n) {
  if (!(n >= 0)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** The Pulls table: each [[relay.pull]] (GET /api/v1/pulls) with its state and since when, last error,
 *  source URL (the server sends it without key or query), bytes received and reconnects. The section stays
 *  hidden on a server without pulls. */
export function renderPulls(section, tbody, pulls) {
  section.hidden = !pulls.length;
  tbody.replaceChildren(...pulls.map((p) => {
    const since = p.since ? ` since ${new Date(p.since * 1000).toLocaleTimeString()}` : '';
    return el('tr', {dataset: {pull: `${p.app}/${p.stream}`, state: p.state}},
      el('td', {text: `${p.app}/${p.stream}`}),
      el('td', {class: 'muted', dataset: {col: 'pull-source'}, text: p.source}),
      el('td', {text: p.mode}),
      el('td', {dataset: {col: 'pull-state'}},
        el('div', {text: `${p.state}${since}`}),
        p.last_error && p.state !== 'live'
          ? el('div', {class: 'error', dataset: {col: 'pull-error'}, text: p.last_error}) : null),
      el('td', {dataset: {col: 'pull-bytes'}, text: formatBytes(p.bytes)}),
      el('td', {dataset: {col: 'pull-reconnects'}, text: String(p.reconnects)}));
  }));
}
