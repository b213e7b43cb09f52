// Every window's buyer KPIs side by side (GET /v1/kpis?window= for 1h, 24h, 7d, 30d), the
// rates as bars per window, the HRS ROC and precision–recall points of the chosen window, and
// the cost per trusted task per day over 30 days (GET /v1/cost/summary, the dashboard's trend).

import { get } from '../api.js';
import { h, fmt, panel, table } from '../ui.js';
import { linePlot, barPlot } from '../plot.js';
import { PANELS, WINDOWS, DEFAULT_WINDOW, kpis, figures } from '../kpi.js';

const DAY = 86400000;
const dayNumber = (d) => Date.parse(`${d}T00:00:00Z`) / DAY;
const dayText = (n) => new Date(Math.round(n) * DAY).toISOString().slice(5, 10);
const pctTick = (v) => `${Math.round(100 * v)} %`;
const RATES = [
  ['containment', (k) => k.containment_rate], ['escalation', (k) => k.escalation_rate],
  ['high risk', (k) => k.high_risk_rate], ['agreement', (k) => k.ensemble.agreement_rate],
];

/** One row per (panel, series) of any window, one column per window. */
function rows(all) {
  const out = new Map();
  WINDOWS.forEach((w, i) => {
    for (const p of PANELS) {
      for (const [key, s, text] of figures(p, all[i])) {
        if (!out.has(key)) out.set(key, { key, title: p.title, series: s, texts: {} });
        out.get(key).texts[w] = text;
      }
    }
  });
  return [...out.values()];
}

function rocPlots(k) {
  if (!k.roc.length) {
    return h('p', { class: 'empty' }, `No ROC in the ${k.window} window: it needs labelled scored decisions of both classes (POST /v1/reviews/{tenant}/{pcs_id}).`);
  }
  const pr = k.roc.filter((p) => p.precision !== null);
  return h('div', { class: 'plots' },
    h('figure', {}, linePlot({ title: 'HRS ROC', xLabel: 'false-positive rate', yLabel: 'true-positive rate', x: [0, 1], y: [0, 1],
      // (0, 0) and (1, 1): flagging nothing and flagging everything, the ends of every ROC.
      diagonal: true, series: [{ label: `ROC, ${k.window} (thresholds 0.1–0.9)`, dots: true,
        points: [[0, 0], ...k.roc.map((p) => [p.fpr, p.tpr]), [1, 1]].sort((a, b) => a[0] - b[0] || a[1] - b[1]) }] }),
    h('figcaption', {}, `AUROC (all versions) ${k.hrs_auroc.all === undefined ? '–' : fmt.num(k.hrs_auroc.all, 3)}`)),
    h('figure', {}, linePlot({ title: 'HRS precision–recall', xLabel: 'recall', yLabel: 'precision', x: [0, 1], y: [0, 1],
      series: [{ label: `PR, ${k.window}`, class: 's1', dots: true, points: pr.map((p) => [p.tpr, p.precision]).sort((a, b) => a[0] - b[0]) }] }),
    h('figcaption', {}, 'precision is undefined where nothing is at or above the threshold')),
    table(k.roc, [
      { label: 'threshold', get: (p) => fmt.num(p.threshold, 1) },
      { label: 'TPR', get: (p) => fmt.pct(p.tpr) }, { label: 'FPR', get: (p) => fmt.pct(p.fpr) },
      { label: 'precision', get: (p) => fmt.pct(p.precision) },
    ]));
}

function costTrend(summary) {
  const tenants = [...new Set(summary.days.map((d) => d.tenant))];
  const series = tenants.map((t, i) => ({ label: t, class: `s${i % 3}`,
    points: summary.days.filter((d) => d.tenant === t && d.cost_per_trusted_task !== null)
      .map((d) => [dayNumber(d.day), d.cost_per_trusted_task]) }));
  if (!series.some((se) => se.points.length)) {
    return h('p', { class: 'empty' }, `No priced day with trusted tasks from ${summary.from} (a price book entry: kakeya cost prices add).`);
  }
  return linePlot({ title: 'cost per trusted task per day', xLabel: 'day (UTC)', yLabel: `per trusted task (${summary.currency})`,
    xFormat: dayText, width: 760, series });
}

export async function render(root) {
  const [all, summary] = await Promise.all([Promise.all(WINDOWS.map(kpis)), get('/v1/cost/summary')]);
  const byWindow = Object.fromEntries(WINDOWS.map((w, i) => [w, all[i]]));
  const rocBox = h('div', { id: 'kpi-roc' }, rocPlots(byWindow[DEFAULT_WINDOW]));
  const rocWindow = h('select', { id: 'roc-window', 'aria-label': 'ROC window' },
    WINDOWS.map((w) => h('option', { value: w, selected: w === DEFAULT_WINDOW }, w)));
  rocWindow.addEventListener('change', () => rocBox.replaceChildren(rocPlots(byWindow[rocWindow.value])));
  root.append(
    h('h1', {}, 'KPIs'),
    panel('Every window (GET /v1/kpis?window=…, the kakeya_kpi_* gauges)', table(rows(all), [
      { label: 'panel', get: (r) => r.title },
      { label: 'series', get: (r) => (r.series === null ? '' : r.series || '(none)') },
      ...WINDOWS.map((w) => ({ label: w, get: (r) => h('span', { 'data-kpi-window': w, 'data-kpi': r.key }, r.texts[w] || '–') })),
    ], { class: 'kpi-table' }),
    h('p', { class: 'note' }, `windows end ${all[0].at}; cost is rolled up per UTC day, so the 1 h window has none`)),
    h('div', { class: 'pair' },
      panel('Rates per window', barPlot({ title: 'rates per window', groups: WINDOWS, y: [0, 1], yFormat: pctTick, yLabel: 'share',
        series: RATES.map(([label, f], j) => ({ label, class: `s${j}`, values: all.map(f) })) }),
      h('p', { class: 'note' }, 'a window without data for a rate draws no bar')),
      panel('Decisions per window', barPlot({ title: 'decisions per window', groups: WINDOWS, yLabel: 'decisions',
        yFormat: (v) => fmt.int(Math.round(v)),
        series: [{ label: 'decisions', values: all.map((k) => k.decisions) }, { label: 'escalated', class: 's1', values: all.map((k) => k.escalated) },
          { label: 'labelled', class: 's2', values: all.map((k) => k.labelled) }] }))),
    panel('HRS ROC / PR points', h('div', { class: 'toolbar' }, h('label', {}, 'Window ', rocWindow)), rocBox),
    panel(`Cost per trusted task trend (30 days), ${summary.from} to ${summary.to}`, costTrend(summary)),
  );
}
