// Small SVG line charts for the console: the shape of the last minutes, no axes.

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/**
 * sparkline([1, 3, 2], {width: 120, height: 28, title: 'ingest'}) -> <svg class="spark">.
 * The line spans the width; the scale runs from 0 to a quarter above the largest value (at least 1),
 * so a steady value draws a steady line below the top.
 */
export function sparkline(values, {width = 120, height = 28, title = ''} = {}) {
  const root = svg('svg', {class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img'});
  const label = svg('title', {});
  label.textContent = title;
  root.append(label);
  if (values.length < 2) return root;
  const max = Math.max(1, ...values) * 1.25;
  const step = width / (values.length - 1);
  const pad = 1.5;
  const points = values.map((v, i) => {
    const x = (i * step).toFixed(1);
    const y = (height - pad - (Math.max(0, v) / max) * (height - 2 * pad)).toFixed(1);
    return `${x},${y}`;
  });
  root.append(svg('polygon', {class: 'area', points: `0,${height} ${points.join(' ')} ${width},${height}`}));
  root.append(svg('polyline', {points: points.join(' ')}));
  return root;
}
