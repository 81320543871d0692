/*
 * Small bar charts in SVG, drawn by hand (about a hundred lines instead of a vendored library):
 * the page needs three kinds of bars and nothing else, and SVG elements with attributes pass the
 * Content-Security-Policy (no inline style, no eval). Colours come from monitor.css classes.
 *
 * Every chart is an <svg role="img"> with an aria-label that reads its figures, and each bar has
 * a <title> (its tooltip); the figures are also written beside the bars as text.
 */

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function chart(width, height, label) {
  const svg = svgEl('svg', {
    viewBox: `0 0 ${width} ${height}`, width: '100%', height, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'none', class: 'chart',
  });
  return svg;
}

/**
 * Columns, one per value (calls per hour): `items` is [{label, value, sub}] where `sub` (at most
 * `value`) is drawn darker inside its column (answered calls within the calls).
 */
export function columns(items, { label, subName = '', height = 64 }) {
  const width = Math.max(items.length, 1) * 10;
  const max = Math.max(1, ...items.map((i) => i.value));
  const read = items.filter((i) => i.value > 0)
    .map((i) => `${i.label}: ${i.value}` + (subName ? ` (${i.sub} ${subName})` : '')).join('; ');
  const svg = chart(width, height, `${label}. ${read || 'none yet'}`);
  items.forEach((item, n) => {
    const h = (item.value / max) * (height - 2);
    const col = svgEl('rect', { x: n * 10 + 1, y: height - h, width: 8, height: h, class: 'bar' });
    col.append(svgEl('title', {}, `${item.label}: ${item.value}` + (subName ? `, ${item.sub} ${subName}` : '')));
    svg.append(col);
    if (item.sub > 0) {
      const s = (item.sub / max) * (height - 2);
      svg.append(svgEl('rect', { x: n * 10 + 1, y: height - s, width: 8, height: s, class: 'bar-sub' }));
    }
  });
  svg.append(svgEl('line', { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: 'axis' }));
  return svg;
}

/**
 * Horizontal bars with a label and the figure as text: `rows` is [{key, label, values: [a, b]}]
 * (one or two series; the second, e.g. p95, drawn lighter behind the first, e.g. p50).
 * Returns a <div> holding one line per row: label, the bar, the figure.
 */
export function hbars(rows, { label, unit = '', series = [] }) {
  const box = document.createElement('div');
  box.className = 'hbars';
  box.setAttribute('role', 'list');
  box.setAttribute('aria-label', label);
  const max = Math.max(1, ...rows.flatMap((r) => r.values.filter((v) => typeof v === 'number')));
  for (const row of rows) {
    const line = document.createElement('div');
    line.className = 'hbar';
    line.setAttribute('role', 'listitem');
    line.dataset.key = row.key;
    const name = document.createElement('span');
    name.className = 'hbar-label';
    name.textContent = row.label;
    const figures = row.values.map((v, i) => (typeof v === 'number' ? v + unit : '—')
      + (series[i] ? ' ' + series[i] : ''));
    const svg = chart(100, 10, `${row.label}: ${figures.join(', ')}`);
    // Widest first, so the narrower (p50) sits on top of the wider (p95).
    const order = row.values.map((v, i) => [v, i]).filter(([v]) => typeof v === 'number')
      .sort((a, b) => b[0] - a[0]);
    for (const [v, i] of order) {
      const rect = svgEl('rect', { x: 0, y: 1, width: Math.max(0.5, (v / max) * 100), height: 8,
        class: i === 0 ? 'bar' : 'bar-light' });
      rect.append(svgEl('title', {}, `${row.label}${series[i] ? ' ' + series[i] : ''}: ${v}${unit}`));
      svg.append(rect);
    }
    const value = document.createElement('span');
    value.className = 'hbar-value';
    value.dataset.figure = row.key;
    value.textContent = row.values.map((v) => (typeof v === 'number' ? String(v) : '—')).join(' / ') + unit;
    line.append(name, svg, value);
    box.append(line);
  }
  return box;
}

/**
 * One stacked bar of parts of a whole (a campaign's contacts by state): `parts` is
 * [{key, label, value}], each drawn with the class `part-<key>`.
 */
export function stacked(parts, { label }) {
  const total = parts.reduce((a, p) => a + p.value, 0);
  const read = parts.map((p) => `${p.label} ${p.value}`).join(', ');
  const svg = chart(100, 12, `${label}: ${read} of ${total}`);
  let x = 0;
  for (const p of parts) {
    if (!p.value) continue;
    const w = (p.value / Math.max(total, 1)) * 100;
    const rect = svgEl('rect', { x, y: 0, width: w, height: 12, class: 'part part-' + p.key });
    rect.append(svgEl('title', {}, `${p.label}: ${p.value} of ${total}`));
    svg.append(rect);
    x += w;
  }
  return svg;
}
