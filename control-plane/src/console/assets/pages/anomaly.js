// Anomalies of one tenant: the live confusion matrix at the threshold in force with its FPR and
// TPR (GET /v1/anomaly/confusion), the exact ROC of the labelled feedback with that threshold
// on it (GET /v1/anomaly/roc), the optimiser's runs (GET /v1/anomaly/thresholds; Optimise now:
// POST /v1/anomaly/optimize-threshold), the active-learning queue (GET /v1/reviews?queued_for=
// anomaly_uncertain|anomaly_audit) with feedback buttons (POST /v1/anomaly/feedback), and the
// clusters of flagged decisions (GET /v1/anomaly/clusters, every tenant).

import { get, post, session } from '../api.js';
import { h, fmt, panel, table, badge, toast } from '../ui.js';
import { linePlot, barPlot } from '../plot.js';

/** The tenant on screen, kept while the tab lives. */
let current = null;
const q = (t) => `tenant_id=${encodeURIComponent(t)}`;

function matrix(c) {
  return h('div', {},
    h('table', { class: 'matrix', id: 'anomaly-confusion' },
      h('thead', {}, h('tr', {}, h('th', {}, `threshold ${fmt.num(c.threshold, 4)}`), h('th', {}, 'labelled anomalous'), h('th', {}, 'labelled normal'))),
      h('tbody', {},
        h('tr', {}, h('th', {}, 'flagged'), h('td', { 'data-cell': 'tp' }, `TP ${c.tp}`), h('td', { 'data-cell': 'fp' }, `FP ${c.fp}`)),
        h('tr', {}, h('th', {}, 'not flagged'), h('td', { 'data-cell': 'fn' }, `FN ${c.fn}`), h('td', { 'data-cell': 'tn' }, `TN ${c.tn}`)))),
    h('div', { class: 'figures' },
      h('div', { class: 'figure' }, h('div', { class: 'value', 'data-figure': 'anomaly_fpr' }, fmt.pct(c.fpr)), h('div', { class: 'label' }, 'FPR = FP ÷ (FP + TN)')),
      h('div', { class: 'figure' }, h('div', { class: 'value', 'data-figure': 'anomaly_tpr' }, fmt.pct(c.tpr)), h('div', { class: 'label' }, 'TPR = TP ÷ (TP + FN)')),
      h('div', { class: 'figure' }, h('div', { class: 'value', 'data-figure': 'anomaly_labels' }, fmt.int(c.n_labels)), h('div', { class: 'label' }, 'labelled decisions'))));
}

function rocPlot(r) {
  if (!r.points.length) {
    return h('p', { class: 'empty' }, `No ROC yet: ${r.n_anomalous} anomalous and ${r.n_normal} normal labels; it needs both (POST /v1/anomaly/feedback, or the buttons below).`);
  }
  // The operating point of the threshold in force: the lowest curve point at or above it.
  const at = r.points.filter((p) => p.threshold >= r.threshold).pop();
  const op = at ? { x: at.fpr, y: at.tpr } : { x: 0, y: 0 };
  return h('figure', {}, linePlot({ title: 'anomaly ROC', xLabel: 'false-positive rate', yLabel: 'true-positive rate', x: [0, 1], y: [0, 1], diagonal: true,
    series: [{ label: `exact ROC, ${r.n_labels} labels`, dots: true, points: [[0, 0], ...r.points.map((p) => [p.fpr, p.tpr])] }],
    marks: [{ ...op, label: `threshold ${fmt.num(r.threshold, 3)}` }] }),
  h('figcaption', {}, `AUROC ${fmt.num(r.auroc, 3)} · ${r.n_anomalous} anomalous, ${r.n_normal} normal`));
}

function history(rows) {
  const runs = rows.slice().reverse();
  return h('div', {},
    runs.length > 1 ? linePlot({ title: 'threshold per run', xLabel: 'run', yLabel: 'threshold / rate', y: [0, 1], height: 220,
      series: [{ label: 'threshold', points: runs.map((r, i) => [i + 1, r.threshold]) },
        { label: 'FPR', class: 's1', points: runs.map((r, i) => [i + 1, r.fpr]) },
        { label: 'TPR', class: 's2', points: runs.map((r, i) => [i + 1, r.tpr]) }] }) : null,
    table(rows, [
      { label: 'when', get: (r) => fmt.time(r.created_at_ms) },
      { label: 'threshold', get: (r) => fmt.num(r.threshold, 4) },
      { label: 'FPR', get: (r) => fmt.pct(r.fpr) }, { label: 'TPR', get: (r) => fmt.pct(r.tpr) },
      { label: 'target FPR', get: (r) => fmt.pct(r.target_fpr) },
      { label: 'feasible', get: (r) => badge(r.feasible ? 'feasible' : 'infeasible', r.feasible ? 'ok' : 'failed') },
      { label: 'labels', get: (r) => fmt.int(r.n_labels) }, { label: 'by', get: (r) => r.origin },
    ], { empty: 'No optimiser run yet (Optimise now, kakeya anomaly optimize-threshold, or automatically every 100 new labels).' }));
}

function clusters(cs) {
  return h('div', {},
    cs.length ? barPlot({ title: 'flagged decisions per cluster', groups: cs.map((c) => `#${c.id}`), yLabel: 'decisions', height: 200,
      yFormat: (v) => fmt.int(Math.round(v)), series: [{ label: 'decisions in the cluster', values: cs.map((c) => c.sample_count) }] }) : null,
    table(cs, [
      { label: 'cluster', get: (c) => `#${c.id}` }, { label: 'label', get: (c) => badge(c.label) },
      { label: 'decisions', get: (c) => fmt.int(c.sample_count) },
      { label: 'first seen', get: (c) => fmt.time(c.first_seen_ms) }, { label: 'last seen', get: (c) => fmt.time(c.last_seen_ms) },
      { label: 'centroid (raw feature units)', get: (c) => h('code', {}, c.centroid.map((v) => fmt.num(v, 2)).join(' ')) },
      { label: 'schema', get: (c) => c.feature_schema },
    ], { empty: 'No cluster yet (POST /v1/anomaly/clusters/rebuild, or kakeya anomaly clusters --rebuild, over flagged decisions).' }));
}

export async function render(root, ctx) {
  const costs = await get('/v1/cost/summary');
  const tenants = [...new Set(['default', ...costs.tenants.map((t) => t.tenant)])];
  if (!current || !tenants.includes(current)) current = tenants.find((t) => t !== 'default') || 'default';
  const tenant = current;
  const [conf, roc, thresholds, cs, uncertain, audit] = await Promise.all([
    get(`/v1/anomaly/confusion?${q(tenant)}`), get(`/v1/anomaly/roc?${q(tenant)}`),
    get(`/v1/anomaly/thresholds?${q(tenant)}&limit=50`), get('/v1/anomaly/clusters'),
    get('/v1/reviews?status=open&queued_for=anomaly_uncertain&limit=50'),
    get('/v1/reviews?status=open&queued_for=anomaly_audit&limit=50'),
  ]);
  const queue = [...uncertain.items, ...audit.items].filter((i) => i.tenant === tenant);
  const pick = h('select', { id: 'anomaly-tenant', 'aria-label': 'tenant' }, tenants.map((t) => h('option', { value: t, selected: t === tenant }, t)));
  pick.addEventListener('change', () => { current = pick.value; ctx.reload(); });
  const optimise = async () => {
    try {
      const o = await post('/v1/anomaly/optimize-threshold', { tenant_id: tenant });
      toast(o.feasible ? `threshold ${fmt.num(o.threshold, 4)}: TPR ${fmt.pct(o.tpr)} at FPR ${fmt.pct(o.fpr)}` : `infeasible: best FPR ${fmt.pct(o.fpr)}`, o.feasible ? 'ok' : 'bad');
      ctx.reload();
    } catch (e) {
      toast(`Not optimised: ${e.message}`, 'bad');
    }
  };
  const feedback = (item, label) => async () => {
    try {
      await post('/v1/anomaly/feedback', { tenant_id: item.tenant, pcs_id: item.pcs_id, user_label: label, submitted_by: session.reviewer(), source: 'gold' });
      toast(`${item.pcs_id.slice(0, 12)}… labelled ${label}`);
      ctx.reload();
    } catch (e) {
      toast(`Not stored: ${e.message}`, 'bad');
    }
  };
  root.append(
    h('h1', {}, 'Anomalies'),
    h('div', { class: 'toolbar' }, h('label', {}, 'Tenant ', pick),
      h('span', { class: 'note' }, `threshold in force: ${thresholds.current === null ? `none yet (the default ${fmt.num(roc.threshold, 2)})` : fmt.num(thresholds.current, 4)}`)),
    h('div', { class: 'split' },
      panel('Live confusion matrix at the threshold in force', matrix(conf)),
      panel('ROC of the labelled feedback', rocPlot(roc))),
    panel('Threshold optimiser runs', h('div', { class: 'actions' },
      h('button', { type: 'button', id: 'anomaly-optimise', onclick: optimise }, 'Optimise now (FPR ≤ 2 %)')), history(thresholds.history)),
    panel(`Active-learning queue (${queue.length} open for ${tenant})`, table(queue, [
      { label: 'queued for', get: (i) => badge(i.queued_for) }, { label: 'pcs_id', get: (i) => h('code', {}, i.pcs_id) },
      { label: 'risk', get: (i) => fmt.num(i.risk, 3) }, { label: 'when', get: (i) => fmt.time(i.created_at_ms) },
      { label: 'feedback', get: (i) => h('span', {}, h('button', { type: 'button', class: 'bad', onclick: feedback(i, 'anomalous') }, 'anomalous'), ' ',
        h('button', { type: 'button', class: 'good', onclick: feedback(i, 'normal') }, 'normal')) },
    ], { empty: 'Nothing queued (POST /v1/anomaly/active-learning, or kakeya anomaly queue, sends the most uncertain decisions here).' })),
    panel('Clusters of flagged decisions (every tenant)', clusters(cs)),
  );
}
