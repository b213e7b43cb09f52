// The buyer dashboard's KPI panels (observability/grafana/buyer_dashboard_v3.json), read from
// GET /v1/kpis?window= — the figures the kakeya_kpi_* gauges export, so the overview and the
// KPI page show what Grafana shows, under the same titles and units. The overview draws one
// window, the KPI page every window. Each shown figure carries `data-kpi="<panel>[.<series>]"`
// (the series: tenant, model version, arm, kind or service, as the panel's legend).

import { get } from './api.js';
import { h, fmt } from './ui.js';

export const WINDOWS = ['1h', '24h', '7d', '30d'];
export const DEFAULT_WINDOW = '24h';
const SERVICES = ['compute', 'storage', 'network', 'model_calls'];

export const kpis = (w) => get(`/v1/kpis?window=${encodeURIComponent(w)}`);

const signedPct = (v) => (v === null || v === undefined ? '–' : `${v >= 0 ? '+' : ''}${fmt.pct(v)}`);
const currency = (k) => (k.cost ? k.cost.currency : '');
const sumBy = (tenants, s) => tenants.reduce((a, t) => a + (t.cost[s] || 0), 0);

/**
 * The panels, in the dashboard's order (the live rate and latency panels, which read
 * Prometheus counters and histograms over 5 minutes, have no window figure and stay in
 * Grafana). `series(k)` gives [[series or null, value or null]]; `text(v, k)` formats a value.
 */
export const PANELS = [
  { id: 'containment_rate', title: 'Hallucination containment rate (SLO ≥ 98 %)', gauge: 'kakeya_kpi_containment_rate',
    series: (k) => [[null, k.containment_rate]], text: (v) => fmt.pct(v) },
  { id: 'cost_per_trusted_task', title: 'Cost per trusted task', gauge: 'kakeya_kpi_cost_per_trusted_task',
    series: (k) => (k.cost ? k.cost.tenants.map((t) => [t.tenant, t.cost_per_trusted_task]) : []),
    text: (v, k) => fmt.money(v, currency(k)) },
  { id: 'hrs_auroc', title: 'HRS model AUROC (online, from labels)', gauge: 'kakeya_kpi_hrs_auroc',
    series: (k) => Object.entries(k.hrs_auroc), text: (v) => fmt.num(v, 3) },
  { id: 'ensemble_agreement_rate', title: 'Ensemble agreement rate', gauge: 'kakeya_kpi_ensemble_agreement_rate',
    series: (k) => [[null, k.ensemble.agreement_rate]], text: (v) => fmt.pct(v) },
  { id: 'escalation_rate', title: 'Escalation rate (SLO ≤ 2 %)', gauge: 'kakeya_kpi_escalation_rate',
    series: (k) => [[null, k.escalation_rate]], text: (v) => fmt.pct(v) },
  { id: 'cost_breakdown', title: 'Cost breakdown (compute, storage, network, model calls)', gauge: 'kakeya_kpi_cost',
    series: (k) => (k.cost && k.cost.tenants.length ? SERVICES.map((s) => [s, sumBy(k.cost.tenants, s)]) : []),
    text: (v, k) => fmt.money(v, currency(k)) },
  { id: 'high_risk_rate', title: 'High-risk rate (risk ≥ 0.7)', gauge: 'kakeya_kpi_high_risk_rate',
    series: (k) => [[null, k.high_risk_rate]], text: (v) => fmt.pct(v) },
  { id: 'budget_utilisation', title: 'Budget utilisation by tenant (top 10)', gauge: 'kakeya_cost_budget_utilisation',
    series: (k) => k.budgets.filter((b) => b.utilisation !== null).sort((a, b) => b.utilisation - a.utilisation)
      .slice(0, 10).map((b) => [b.tenant, b.utilisation]),
    text: (v) => fmt.pct(v) },
  { id: 'savings', title: 'Savings from optimisation (monthly)', gauge: 'kakeya_kpi_savings_monthly',
    series: (k) => [['projected', k.savings.projected_monthly], ['realised', k.savings.realised_monthly]],
    text: (v, k) => fmt.money(v, currency(k)) },
  { id: 'disagreements', title: 'Ensemble disagreement events', gauge: 'kakeya_kpi_ensemble_disagreements',
    series: (k) => Object.entries(k.ensemble.disagreements), text: (v) => fmt.int(v) },
  { id: 'containment_delta', title: 'Containment delta vs control arm', gauge: 'kakeya_kpi_containment_delta',
    series: (k) => Object.entries(k.containment_delta_vs_control), text: (v) => signedPct(v) },
  { id: 'model_version_share', title: 'Model version distribution', gauge: 'kakeya_kpi_model_version_share',
    series: (k) => Object.entries(k.model_versions), text: (v) => fmt.pct(v) },
  { id: 'decisions', title: 'Decisions in the window', gauge: 'kakeya_kpi_decisions',
    series: (k) => [[null, k.decisions]], text: (v) => fmt.int(v) },
];

/** Why a panel of window `k` has no figure. */
function none(p, k) {
  if ((p.id === 'cost_per_trusted_task' || p.id === 'cost_breakdown') && !k.cost) return 'cost is rolled up per UTC day: no figure below 24 h';
  if (p.id === 'hrs_auroc') return 'needs labelled decisions of both classes';
  if (p.id === 'containment_delta') return 'needs labelled hallucinations of the champion and another arm';
  if (p.id === 'budget_utilisation') return 'no budget set (PUT /v1/cost/budgets)';
  return 'no data in the window';
}

/** The figure texts of panel `p` for window `k`: [[data-kpi key, series, text]]. */
export function figures(p, k) {
  return p.series(k).map(([s, v]) => [s === null ? p.id : `${p.id}.${s}`, s, p.text(v, k)]);
}

/** Panel `p` of window `k` as a figure box (one line per series). */
export function kpiFigure(p, k) {
  const rows = figures(p, k);
  const single = rows.length === 1 && rows[0][1] === null;
  return h('div', { class: 'figure kpi', 'data-panel': p.id },
    single ? h('div', { class: 'value', 'data-kpi': rows[0][0] }, rows[0][2]) : null,
    !single && rows.length ? h('dl', { class: 'series' }, rows.flatMap(([key, s, text]) => [
      h('dt', {}, s === '' ? '(none)' : s), h('dd', { 'data-kpi': key }, text)])) : null,
    !rows.length ? h('div', { class: 'value empty-figure' }, '–') : null,
    h('div', { class: 'label' }, p.title),
    !rows.length || (single && rows[0][2] === '–') ? h('div', { class: 'note' }, none(p, k)) : null);
}

/** A window selector; `onChange(w)` when another is picked. */
export function windowSelect(current, onChange) {
  const sel = h('select', { id: 'kpi-window', 'aria-label': 'KPI window' },
    WINDOWS.map((w) => h('option', { value: w, selected: w === current }, w)));
  sel.addEventListener('change', () => onChange(sel.value));
  return sel;
}
