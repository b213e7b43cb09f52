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

/** The legend: a key and a label per entry, each placed after the previous label. */
function legend(svg, entries, x0, y, cls) {
  let x = x0;
  for (const [i, e] of entries.entries()) {
    svg.append(s('rect', { x, y: y - 8, width: 12, height: 8, class: `key ${cls(e, i)}` }));
    svg.append(s('text', { x: x + 16, y, class: 'legend' }, e.label));
    x += 30 + 6.5 * String(e.label).length;
  }
}

const short = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toFixed(2));

/**
 * A line plot. `series`: [{label, points: [[x, y]], class, dots}] (`dots`: a dot on every
 * point, for curves of few points); `bands`: [{label, points:
 * [[x, lo, hi]], class}] drawn under the lines; `x`/`y`: fixed domains; `diagonal`: the
 * y = x chance line (ROC); `xFormat`: labels for x values (e.g. days); `marks`: [{x, y,
 * label}] single points drawn as labelled dots (e.g. the threshold in force on a ROC).
 */
export function linePlot({ series = [], bands = [], marks = [], x, y, xLabel = '', yLabel = '', diagonal = false,
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
    if (se.dots) {
      for (const p of se.points) svg.append(s('circle', { cx: px(p[0]), cy: py(p[1]), r: 3.5, class: `dot ${se.class || `s${i}`}` }));
    }
  });
  for (const k of marks) {
    svg.append(s('circle', { cx: px(k.x), cy: py(k.y), r: 5, class: 'mark' }, s('title', {}, k.label || '')));
    svg.append(s('text', { x: px(k.x) + 8, y: py(k.y) + 14, class: 'legend' }, k.label || ''));
  }
  legend(svg, [...bands, ...series].filter((e) => e.label), m.l + 10, 12, (e) => e.class || `s${series.indexOf(e)}`);
  return svg;
}

/**
 * Grouped bars: `groups` (x categories), `series`: [{label, values: [number or null per
 * group], class}]; a null value draws no bar. `y`: fixed domain (default [0, max]).
 */
export function barPlot({ groups, series, y, yLabel = '', yFormat = short, width = 520, height = 260, title = '' }) {
  const m = { l: 56, r: 16, t: 24, b: 36 };
  const values = series.flatMap((se) => se.values).filter(Number.isFinite);
  const [y0, y1] = y || [0, Math.max(...values, 0) || 1];
  const py = (v) => height - m.b - ((v - y0) / (y1 - y0)) * (height - m.t - m.b);
  const gw = (width - m.l - m.r) / Math.max(groups.length, 1);
  const bw = (gw * 0.8) / Math.max(series.length, 1);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'plot', role: 'img', 'aria-label': title || yLabel });
  if (title) svg.append(s('title', {}, title));
  for (const t of ticks([y0, y1], 4)) {
    svg.append(s('line', { x1: m.l, x2: width - m.r, y1: py(t), y2: py(t), class: 'grid' }));
    svg.append(s('text', { x: m.l - 6, y: py(t) + 4, class: 'tick', 'text-anchor': 'end' }, yFormat(t)));
  }
  svg.append(s('line', { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: 'axis' }));
  svg.append(s('text', { x: 14, y: (m.t + height - m.b) / 2, class: 'axis-label', 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${(m.t + height - m.b) / 2})` }, yLabel));
  groups.forEach((g, i) => {
    const gx = m.l + i * gw + gw * 0.1;
    svg.append(s('text', { x: m.l + (i + 0.5) * gw, y: height - m.b + 16, class: 'tick', 'text-anchor': 'middle' }, g));
    series.forEach((se, j) => {
      const v = se.values[i];
      if (!Number.isFinite(v)) return;
      const top = py(Math.min(Math.max(v, y0), y1));
      svg.append(s('rect', { x: gx + j * bw, y: top, width: Math.max(bw - 2, 1), height: height - m.b - top,
        class: `bar ${se.class || `s${j}`}` }, s('title', {}, `${se.label} ${g}: ${yFormat(v)}`)));
    });
  });
  legend(svg, series, m.l + 10, 14, (se, j) => se.class || `s${j}`);
  return svg;
}
