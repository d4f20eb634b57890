// The console's ABR column: whether a stream is transcoded, its renditions, the CPU its worker takes, and
// buttons to start or stop the transcode (the admin API's /streams/APP/NAME/abr). A rendition's own row
// (STREAM@LABEL) says which source it comes from.

import {el, explain} from './common.js';

/** Fill `cell` for stream `s` (from GET /api/v1/streams); `api(path, options)` calls the admin API and
 *  `report(message)` shows an error (or '' to clear it). */
export function renderAbr(cell, s, {api, report}) {
  const abr = s.abr;
  if (!abr) {
    cell.replaceChildren(el('span', {class: 'muted', text: '–'}));
    return;
  }
  if (abr.rendition_of) {
    cell.replaceChildren(el('span', {class: 'muted', text: `rendition ${abr.label} of ${abr.rendition_of}`}));
    return;
  }
  const path = `/streams/${encodeURIComponent(s.app)}/${encodeURIComponent(s.name)}/abr`;
  const key = `${s.app}/${s.name}`;
  const act = async (method, button) => {
    button.disabled = true;
    button.textContent = method === 'POST' ? 'Starting…' : 'Stopping…';
    const result = await api(path, {method});
    report(result.ok ? '' : `${method === 'POST' ? 'Starting' : 'Stopping'} the transcode of ${key} failed: ${explain(result)}`);
  };
  if (!abr.running) {
    const parts = [el('div', {dataset: {col: 'abr-state'}, text: abr.enabled ? 'not transcoded' : 'ABR off for this app'})];
    if (abr.refusal) parts.push(el('div', {class: 'error', text: abr.refusal.error}));
    if (abr.enabled) {
      const start = el('button', {type: 'button', text: 'Start ABR', dataset: {action: 'abr-start'}});
      start.addEventListener('click', () => act('POST', start));
      parts.push(start);
    }
    cell.replaceChildren(...parts);
    return;
  }
  const renditions = abr.renditions.filter((r) => !r.shed).map((r) => {
    const viewers = r.viewers ? ` (${r.viewers} watching)` : '';
    return `${r.label}${r.ready ? '' : ' starting'}${viewers}`;
  });
  const cpu = typeof abr.cpu_percent === 'number' ? `CPU ${Math.round(abr.cpu_percent)} %` : 'CPU –';
  const speed = typeof abr.speed === 'number' ? ` · ${abr.speed.toFixed(2)}× real time` : '';
  const details = [`${abr.state} on ${abr.node}`, abr.pid ? `pid ${abr.pid}` : null,
    abr.restarts ? `${abr.restarts} restart${abr.restarts === 1 ? '' : 's'}` : null,
    abr.shed && abr.shed.length ? `shed ${abr.shed.join(', ')}` : null].filter(Boolean).join(' · ');
  const stop = el('button', {type: 'button', class: 'danger', text: 'Stop ABR', dataset: {action: 'abr-stop'}});
  stop.addEventListener('click', () => act('DELETE', stop));
  cell.replaceChildren(
    el('div', {dataset: {col: 'abr-renditions'}, text: renditions.join(' · ') || 'no rendition left'}),
    el('div', {dataset: {col: 'abr-cpu'}, text: `${cpu}${speed}`}),
    el('div', {class: 'muted', text: details}),
    stop);
}
