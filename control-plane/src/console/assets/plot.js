// Inline SVG plots drawn from the numbers the API returns (no charting library: a line plot
// with bands is a few dozen lines, and this keeps the console free of vendored code).

// The SVG namespace: a name, never fetched.
const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function extent(values, fallback) {
  const v = values.filter(Number.isFinite);
  if (!v.length) return fallback;
  let [lo, hi] = [Math.min(...v), Math.max(...v)];
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

function ticks([lo, hi], n = 5) {
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

const short = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toFixed(2));

/**
 * A line plot. `series`: [{label, points: [[x, y]], class}]; `bands`: [{label, points:
 * [[x, lo, hi]], class}] drawn under the lines; `x`/`y`: fixed domains; `diagonal`: the
 * y = x chance line (ROC); `xTicks`: labels for x values (e.g. days).
 */
export function linePlot({ series = [], bands = [], x, y, xLabel = '', yLabel = '', diagonal = false,
  xFormat = short, width = 520, height = 300, title = '' }) {
  const m = { l: 56, r: 16, t: 20, b: 44 };
  const xs = [...series.flatMap((se) => se.points.map((p) => p[0])), ...bands.flatMap((b) => b.points.map((p) => p[0]))];
  const ys = [...series.flatMap((se) => se.points.map((p) => p[1])), ...bands.flatMap((b) => b.points.flatMap((p) => [p[1], p[2]]))];
  const [x0, x1] = x || extent(xs, [0, 1]);
  const [y0, y1] = y || extent(ys, [0, 1]);
  const px = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const py = (v) => height - m.b - ((v - y0) / (y1 - y0)) * (height - m.t - m.b);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'plot', role: 'img', 'aria-label': title || yLabel });
  if (title) svg.append(s('title', {}, title));
  for (const t of ticks([y0, y1])) {
    svg.append(s('line', { x1: m.l, x2: width - m.r, y1: py(t), y2: py(t), class: 'grid' }));
    svg.append(s('text', { x: m.l - 6, y: py(t) + 4, class: 'tick', 'text-anchor': 'end' }, short(t)));
  }
  for (const t of ticks([x0, x1])) {
    svg.append(s('text', { x: px(t), y: height - m.b + 16, class: 'tick', 'text-anchor': 'middle' }, xFormat(t)));
  }
  svg.append(s('line', { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: 'axis' }));
  svg.append(s('line', { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b, class: 'axis' }));
  svg.append(s('text', { x: (m.l + width - m.r) / 2, y: height - 6, class: 'axis-label', 'text-anchor': 'middle' }, xLabel));
  svg.append(s('text', { x: 14, y: (m.t + height - m.b) / 2, class: 'axis-label', 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${(m.t + height - m.b) / 2})` }, yLabel));
  if (diagonal) svg.append(s('line', { x1: px(x0), y1: py(y0), x2: px(x1), y2: py(y1), class: 'chance' }));
  for (const b of bands) {
    if (!b.points.length) continue;
    const upper = b.points.map((p) => `${px(p[0])},${py(p[2])}`);
    const lower = b.points.slice().reverse().map((p) => `${px(p[0])},${py(p[1])}`);
    svg.append(s('polygon', { points: [...upper, ...lower].join(' '), class: `band ${b.class || ''}` }, s('title', {}, b.label || '')));
  }
  series.forEach((se, i) => {
    if (!se.points.length) return;
    const d = se.points.map((p, j) => `${j ? 'L' : 'M'}${px(p[0])},${py(p[1])}`).join(' ');
    svg.append(s('path', { d, class: `line ${se.class || `s${i}`}` }, s('title', {}, se.label || '')));
  });
  const legend = [...bands, ...series].filter((e) => e.label);
  legend.forEach((e, i) => {
    const lx = m.l + 10 + i * 150;
    svg.append(s('rect', { x: lx, y: 4, width: 12, height: 8, class: `key ${e.class || `s${series.indexOf(e)}`}` }));
    svg.append(s('text', { x: lx + 16, y: 12, class: 'legend' }, e.label));
  });
  return svg;
}
