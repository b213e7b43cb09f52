// The buyer dashboard's figures for one window (GET /v1/kpis?window=, the numbers the
// kakeya_kpi_* gauges and so Grafana show, panels named as on the dashboard), then what is
// true now: open reviews, the champion, the canary, drift alerts, the aliases.

import { get } from '../api.js';
import { h, fmt, panel, figure, table, badge, orNone } from '../ui.js';
import { PANELS, DEFAULT_WINDOW, kpis, kpiFigure, windowSelect } from '../kpi.js';

/** The window on screen, kept while the tab lives. */
let current = DEFAULT_WINDOW;

async function drawKpis(box, w) {
  box.dataset.ready = 'false';
  const k = await kpis(w);
  box.replaceChildren(
    h('p', { class: 'note' }, `${k.from} to ${k.at} · ${fmt.int(k.decisions)} decisions, ${fmt.int(k.scored)} scored, `
      + `${fmt.int(k.labelled)} labelled (${fmt.int(k.hallucinated)} hallucinated), ${fmt.int(k.escalated)} escalated`),
    h('div', { class: 'figures' }, PANELS.map((p) => kpiFigure(p, k))));
  box.dataset.window = w;
  box.dataset.ready = 'true';
}

export async function render(root) {
  const box = h('div', { id: 'kpis' });
  const [, open, aliases, canary, alerts] = await Promise.all([
    drawKpis(box, current),
    get('/v1/reviews?status=open&limit=1000'),
    get('/v1/aliases'),
    orNone(get('/v1/operator/canary/status')),
    get('/v1/hrs/drift/alerts?since=24h&limit=1000'),
  ]);
  const champion = aliases.find((a) => a.alias === 'champion');
  const select = windowSelect(current, async (w) => {
    current = w;
    await drawKpis(box, w);
  });
  root.append(
    h('h1', {}, 'Overview'),
    panel('Buyer KPIs (GET /v1/kpis, as on the Grafana buyer dashboard)',
      h('div', { class: 'toolbar' }, h('label', {}, 'Window ', select),
        h('a', { href: '#/kpis' }, 'every window, with plots')),
      box),
    panel('Now',
      h('div', { class: 'figures' },
        figure('open reviews', `${open.items.length}${open.next_cursor ? '+' : ''}`, 'open_reviews'),
        figure('champion', champion ? champion.version : 'none', 'champion'),
        figure('canary', canary ? `${canary.status} ${fmt.num(canary.traffic_percent, 1)} %` : 'none', 'canary'),
        figure('drift alerts, 24 h', fmt.int(alerts.length), 'drift_alerts'))),
    panel('Aliases (GET /v1/aliases)', table(aliases, [
      { label: 'alias', get: (a) => badge(a.alias) },
      { label: 'version', get: (a) => h('a', { href: '#/models' }, a.version) },
      { label: 'weight', get: (a) => fmt.num(a.weight, 3) },
      { label: 'since', get: (a) => fmt.time(a.updated_at_ms) },
    ])),
  );
}
