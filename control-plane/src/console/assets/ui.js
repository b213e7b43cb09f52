// Small DOM helpers. Text always goes in as text nodes (never innerHTML): the review queue
// shows agents' answers and retained evidence, which must never run as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const fmt = {
  num: (v, digits = 4) => (v === null || v === undefined ? '–' : Number(v).toFixed(digits)),
  int: (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en')),
  pct: (v, digits = 2) => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(digits)} %`),
  money: (v, cur = '') => (v === null || v === undefined ? '–' : `${Number(v).toFixed(4)} ${cur}`.trim()),
  time: (ms) => (ms === null || ms === undefined ? '–' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19)),
  interval: (ci, f = (x) => fmt.num(x)) => (ci ? `[${f(ci.low)}, ${f(ci.high)}]` : '–'),
};

/** A titled panel. */
export function panel(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, title), ...children);
}

/** A big figure with its label; `key` names it for tests (`data-figure`). */
export function figure(label, value, key, note) {
  return h('div', { class: 'figure' },
    h('div', { class: 'value', 'data-figure': key }, value),
    h('div', { class: 'label' }, label),
    note ? h('div', { class: 'note' }, note) : null);
}

/** A table of `rows` with `cols`: [{label, get(row) → text or Node}]. */
export function table(rows, cols, opts = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, opts.empty || 'Nothing yet.');
  return h('table', { class: opts.class },
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c.label)))),
    h('tbody', {}, rows.map((r, i) => h('tr', opts.rowAttrs ? opts.rowAttrs(r, i) : {},
      cols.map((c) => h('td', {}, c.get(r)))))));
}

export function badge(text, kind = text) {
  return h('span', { class: `badge ${String(kind).replace(/[^a-z_]/gi, '')}` }, text);
}

export function toast(text, kind = 'ok') {
  const t = document.getElementById('toast');
  t.className = `show ${kind}`;
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 3000);
}

/** A 404 from a "latest" route means "none yet", not a failure. */
export async function orNone(promise) {
  try {
    return await promise;
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}
