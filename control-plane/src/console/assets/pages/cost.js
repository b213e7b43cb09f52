// Cost: spend per day (GET /v1/cost/summary), the forecast with its 80 % and 95 % intervals
// (POST /v1/cost/forecast, computed now, nothing stored), reconciliations against the billing
// exports (GET /v1/cost/reconcile/history), budgets (GET /v1/cost/budgets) and the advisor's
// recommendations with apply (GET /v1/cost/recommendations, POST /v1/cost/recommendations/apply).

import { get, post } from '../api.js';
import { h, fmt, panel, table, badge, toast } from '../ui.js';
import { linePlot } from '../plot.js';

const DAY = 86400000;
const dayNumber = (d) => Date.parse(`${d}T00:00:00Z`) / DAY;
const dayText = (n) => new Date(Math.round(n) * DAY).toISOString().slice(5, 10);

export async function render(root, ctx) {
  const [summary, reconciliations, budgets, recs] = await Promise.all([
    get('/v1/cost/summary'), get('/v1/cost/reconcile/history?limit=5'), get('/v1/cost/budgets'),
    get('/v1/cost/recommendations'),
  ]);
  const forecast = await post('/v1/cost/forecast', { horizon_days: 14 });
  const cur = summary.currency;
  // Spend per day over every tenant.
  const byDay = new Map();
  for (const d of summary.days) {
    const total = d.cost ? d.cost.compute + d.cost.storage + d.cost.network + d.cost.model_calls : 0;
    byDay.set(d.day, (byDay.get(d.day) || 0) + total);
  }
  const history = [...byDay.entries()].sort().map(([d, v]) => [dayNumber(d), v]);
  const f = forecast.total;
  const fpoints = f ? f.points.map((p) => [dayNumber(p.day), p]) : [];
  const plot = linePlot({
    title: 'daily spend and forecast', xLabel: 'day (UTC)', yLabel: `spend (${cur})`, xFormat: dayText, width: 760,
    bands: [
      { label: '95 % interval', class: 'b95', points: fpoints.map(([x, p]) => [x, p.lo95, p.hi95]) },
      { label: '80 % interval', class: 'b80', points: fpoints.map(([x, p]) => [x, p.lo80, p.hi80]) },
    ],
    series: [{ label: 'spend', points: history }, { label: 'forecast', class: 's1', points: fpoints.map(([x, p]) => [x, p.point]) }],
  });
  const apply = (r) => async () => {
    try {
      const done = await post('/v1/cost/recommendations/apply', { recommendation_id: r.id });
      toast(`${done.kind} applied at ${done.applied_at}`);
      ctx.reload();
    } catch (e) {
      toast(`Not applied: ${e.message}`, 'bad');
    }
  };
  root.append(
    h('h1', {}, 'Cost'),
    panel(`Spend ${summary.from} to ${summary.to}, and a 14-day forecast`, plot,
      f ? h('p', { class: 'note' }, `${f.history_days} days of history; backtest: `,
        f.backtest.map((b) => `${b.horizon} d MAPE ${b.mape === null ? '–' : `${fmt.num(b.mape, 1)} %`}, 95 % coverage ${fmt.pct(b.coverage95, 0)}`).join(' · '))
        : h('p', { class: 'note' }, 'No forecast: no priced cost history yet.')),
    panel('Per tenant', table(summary.tenants, [
      { label: 'tenant', get: (t) => t.tenant },
      { label: 'decisions', get: (t) => fmt.int(t.decisions) },
      { label: 'trusted', get: (t) => fmt.int(t.trusted) },
      { label: 'compute', get: (t) => fmt.money(t.cost.compute) },
      { label: 'storage', get: (t) => fmt.money(t.cost.storage) },
      { label: 'network', get: (t) => fmt.money(t.cost.network) },
      { label: 'model calls', get: (t) => fmt.money(t.cost.model_calls) },
      { label: 'total', get: (t) => fmt.money(t.total, cur) },
      { label: 'per trusted task', get: (t) => fmt.money(t.cost_per_trusted_task, cur) },
    ])),
    h('div', { class: 'split' },
      panel('Budgets', table(budgets, [
        { label: 'tenant', get: (b) => b.tenant },
        { label: 'soft / hard cap', get: (b) => `${fmt.money(b.soft_cap)} / ${fmt.money(b.hard_cap)}` },
        { label: 'spent', get: (b) => fmt.money(b.spent, cur) },
        { label: 'utilisation', get: (b) => fmt.pct(b.utilisation, 1) },
        { label: 'action', get: (b) => badge(b.action || 'none') },
      ], { empty: 'No budget set (PUT /v1/cost/budgets).' })),
      panel('Reconciliations', table(reconciliations, [
        { label: 'when', get: (r) => r.created_at },
        { label: 'period', get: (r) => `${r.from} to ${r.to}` },
        { label: 'internal', get: (r) => fmt.money(r.internal_total, r.currency) },
        { label: 'billed', get: (r) => fmt.money(r.billed_total, r.currency) },
        { label: 'status', get: (r) => badge(String(r.status)) },
      ], { empty: 'No reconciliation yet (import a billing export, then POST /v1/cost/reconcile).' }))),
    panel('Recommendations', table(recs.recommendations, [
      { label: 'kind', get: (r) => r.kind }, { label: 'tenant', get: (r) => r.tenant || 'all' },
      { label: 'status', get: (r) => badge(r.status) },
      { label: 'projected saving / month', get: (r) => fmt.money(r.projected_monthly_saving, recs.currency) },
      { label: 'risk', get: (r) => r.risk }, { label: 'why', get: (r) => r.rationale },
      { label: '', get: (r) => (r.status === 'pending' ? h('button', { type: 'button', onclick: apply(r) }, 'Apply') : (r.applied_at || '')) },
    ], { empty: 'No recommendation now.' }),
    recs.skipped.length ? h('p', { class: 'note' }, `Rules without data: ${recs.skipped.map((s) => s.rule || s.kind || JSON.stringify(s)).join(', ')}`) : null),
  );
}
