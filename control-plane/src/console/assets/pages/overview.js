// The figures that exist today, each from the route named under it. Escalation counts are the
// control plane's Prometheus counters (since this process started, as the dashboards read
// them); spend and trusted tasks are the stored 30-day cost roll-up.

import { get, metricTotals } from '../api.js';
import { h, fmt, panel, figure, table, badge, orNone } from '../ui.js';

export async function render(root) {
  const [m, cost, open, aliases, canary, alerts] = await Promise.all([
    metricTotals(),
    get('/v1/cost/summary'),
    get('/v1/reviews?status=open&limit=1000'),
    get('/v1/aliases'),
    orNone(get('/v1/operator/canary/status')),
    get('/v1/hrs/drift/alerts?since=24h&limit=1000'),
  ]);
  const accepted = m.kakeya_accepted_total || 0;
  const escalated = m.kakeya_escalated_total || 0;
  const fresh = accepted + escalated;
  const sum = (k) => cost.tenants.reduce((a, t) => a + (t[k] || 0), 0);
  const spend = sum('total');
  const trusted = sum('trusted');
  const champion = aliases.find((a) => a.alias === 'champion');
  root.append(
    h('h1', {}, 'Overview'),
    panel('Decisions since this control plane started (GET /metrics)',
      h('div', { class: 'figures' },
        figure('submissions received', fmt.int(m.kakeya_ingest_total || 0), 'ingest_total'),
        figure('fresh decisions', fmt.int(fresh), 'decisions'),
        figure('escalated', fmt.int(escalated), 'escalated'),
        figure('escalation rate', fresh ? fmt.pct(escalated / fresh) : '–', 'escalation_rate',
          'escalated ÷ fresh decisions; SLO ≤ 2 %'),
        figure('dedup hits', fmt.int(m.kakeya_dedup_hits_total || 0), 'dedup_hits'))),
    panel(`Cost, ${cost.from} to ${cost.to} (GET /v1/cost/summary)`,
      h('div', { class: 'figures' },
        figure('decisions recorded', fmt.int(sum('decisions')), 'cost_decisions'),
        figure('trusted tasks', fmt.int(trusted), 'trusted'),
        figure('spend', fmt.money(spend, cost.currency), 'spend'),
        figure('cost per trusted task', trusted ? fmt.money(spend / trusted, cost.currency) : '–', 'cost_per_trusted'))),
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
