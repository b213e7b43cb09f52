// The model registry: versions (GET /v1/models), a version's card (GET /v1/models/{version})
// with ROC / PR curves and the reliability diagram drawn from the card's computed points,
// aliases (GET /v1/aliases) and their history (GET /v1/aliases/history), and the A/B
// experiments (GET /v1/hrs/ab, GET /v1/hrs/ab/{id}) with their 95 % intervals.

import { get } from '../api.js';
import { h, fmt, panel, table, badge } from '../ui.js';
import { linePlot } from '../plot.js';

const METRICS = ['n', 'auroc', 'pr_auc', 'brier', 'ece', 'auroc_length_matched'];

function metricsTable(card) {
  const ev = card.evaluation || {};
  if (ev.source !== 'computed') {
    return h('p', { class: 'note' }, ev.note || 'This card has no computed evaluation.');
  }
  // Cross-validated cards: metrics per task; training-job cards: one metric set with intervals.
  const m = ev.metrics || {};
  if (m.all) {
    const tasks = Object.keys(m);
    return table(tasks, [{ label: 'task', get: (t) => t },
      ...METRICS.map((k) => ({ label: k, get: (t) => (k === 'n' ? fmt.int(m[t][k]) : fmt.num(m[t][k])) }))]);
  }
  return table(Object.entries(m), [
    { label: 'metric', get: ([k]) => k },
    { label: 'value', get: ([, v]) => fmt.num(v && typeof v === 'object' ? v.value : v) },
    { label: '95 % interval', get: ([, v]) => (v && v.ci_low !== undefined ? fmt.interval({ low: v.ci_low, high: v.ci_high }) : '–') },
  ]);
}

function curves(card) {
  const c = (card.evaluation || {}).curves;
  const out = [];
  if (c && c.points) {
    // Every point flags the rows scoring at least its threshold; ROC starts where none is flagged.
    out.push(h('figure', {}, linePlot({
      title: 'ROC', xLabel: 'false positive rate', yLabel: 'true positive rate', x: [0, 1], y: [0, 1], diagonal: true,
      series: [{ label: 'ROC', points: [[0, 0], ...c.points.map((p) => [p.fpr, p.tpr])] }],
    }), h('figcaption', {}, `ROC of the ${c.scores} (${fmt.int(c.positives)} hallucinated, ${fmt.int(c.negatives)} faithful)`)));
    out.push(h('figure', {}, linePlot({
      title: 'Precision–recall', xLabel: 'recall', yLabel: 'precision', x: [0, 1], y: [0, 1],
      series: [{ label: 'precision–recall', points: c.points.map((p) => [p.tpr, p.precision]), class: 's1' }],
    }), h('figcaption', {}, `precision–recall of the ${c.scores}, ${c.points.length} thresholds`)));
  }
  const bins = ((card.calibration || {}).bins || []).filter((b) => b.n > 0);
  if (bins.length) {
    out.push(h('figure', {}, linePlot({
      title: 'Reliability', xLabel: 'mean predicted risk', yLabel: 'observed hallucination rate', x: [0, 1], y: [0, 1],
      diagonal: true, series: [{ label: 'validation bins', points: bins.map((b) => [b.mean_predicted, b.observed]), class: 's2' }],
    }), h('figcaption', {}, `ECE ${fmt.num(card.calibration.ece)}, MCE ${fmt.num(card.calibration.mce)}`)));
  }
  if (!out.length) out.push(h('p', { class: 'note' }, 'This card has no curve points (an uploaded artifact, or a card made before they were added).'));
  return h('div', { class: 'plots' }, out);
}

async function showCard(box, version) {
  const d = await get(`/v1/models/${encodeURIComponent(version)}`);
  const c = d.card;
  box.replaceChildren(...[
    h('h2', {}, 'Model card ', h('code', {}, version)),
    h('dl', { class: 'facts' },
      h('dt', {}, 'kind'), h('dd', {}, c.kind || '–'),
      h('dt', {}, 'schema'), h('dd', {}, c.schema_version || '–'),
      h('dt', {}, 'escalate at risk ≥'), h('dd', {}, fmt.num(c.escalate_threshold)),
      h('dt', {}, 'training rows'), h('dd', {}, fmt.int((c.training || {}).rows)),
      h('dt', {}, 'evaluation'), h('dd', {}, (c.evaluation || {}).protocol || (c.evaluation || {}).source || '–'),
      h('dt', {}, 'sha256'), h('dd', {}, h('code', {}, d.sha256.slice(0, 16) + '…'))),
    metricsTable(c),
    curves(c),
    (c.limitations || []).length ? h('ul', { class: 'limitations' }, c.limitations.map((l) => h('li', {}, l))) : null].filter(Boolean));
}

function abTable(reports) {
  const arm = (a) => (a ? [
    `${fmt.int(a.requests)} req`,
    h('br'), `esc ${fmt.pct(a.escalation_rate)} ${fmt.interval(a.escalation_ci95, (x) => fmt.pct(x))}`,
    h('br'), `AUROC ${a.auroc ? `${fmt.num(a.auroc.auroc, 3)} ${fmt.interval(a.auroc.ci95, (x) => fmt.num(x, 3))}` : '–'}`,
  ] : '–');
  return table(reports, [
    { label: 'experiment', get: (r) => r.experiment.id },
    { label: 'status', get: (r) => badge(r.experiment.status) },
    { label: 'split', get: (r) => fmt.pct(r.experiment.traffic_split, 0) },
    { label: 'control', get: (r) => [h('code', {}, r.experiment.control), h('br'), arm(r.control)] },
    { label: 'treatment', get: (r) => [h('code', {}, r.experiment.treatment), h('br'), arm(r.treatment)] },
    { label: 'AUROC difference', get: (r) => (r.auroc_difference ? `${fmt.num(r.auroc_difference.difference, 3)} ${fmt.interval(r.auroc_difference.ci95, (x) => fmt.num(x, 3))}, p ${fmt.num(r.auroc_difference.p_value, 3)}` : '–') },
    { label: 'verdict', get: (r) => [badge(String(r.verdict)), ' ', h('span', { class: 'note' }, r.verdict_reason)] },
  ], { empty: 'No A/B experiment yet (POST /v1/hrs/ab/start).' });
}

export async function render(root) {
  const [models, aliases, history, ab] = await Promise.all([
    get('/v1/models'), get('/v1/aliases'), get('/v1/aliases/history?limit=50'), get('/v1/hrs/ab?limit=10'),
  ]);
  const reports = await Promise.all(ab.experiments.map((e) => get(`/v1/hrs/ab/${encodeURIComponent(e.id)}`)));
  const cardBox = h('div', { class: 'panel', id: 'card' });
  const champion = (aliases.find((a) => a.alias === 'champion') || {}).version;
  root.append(
    h('h1', {}, 'Models'),
    h('div', { class: 'split' },
      panel('Versions', table(models, [
        { label: 'version', get: (m) => h('a', { href: '#/models', 'data-version': m.version, onclick: (e) => { e.preventDefault(); showCard(cardBox, m.version); } }, m.version) },
        { label: 'aliases', get: (m) => m.aliases.map((a) => badge(a)) },
        { label: 'signed', get: (m) => (m.signature ? '✓' : '–') },
        { label: 'registered', get: (m) => fmt.time(m.created_at_ms) },
      ])),
      cardBox),
    panel('Aliases', table(aliases, [
      { label: 'alias', get: (a) => badge(a.alias) }, { label: 'version', get: (a) => a.version },
      { label: 'weight', get: (a) => fmt.num(a.weight, 3) }, { label: 'since', get: (a) => fmt.time(a.updated_at_ms) },
    ])),
    panel('Alias history', table(history.items, [
      { label: 'when', get: (e) => fmt.time(e.created_at_ms ?? e.at_ms) },
      { label: 'alias', get: (e) => badge(e.alias) },
      { label: 'from → to', get: (e) => `${e.previous_version || '∅'} → ${e.new_version || '∅'}` },
      { label: 'weight', get: (e) => fmt.num(e.weight, 3) },
      { label: 'reason', get: (e) => e.reason || '–' },
      { label: 'actor', get: (e) => e.actor || '–' },
    ])),
    panel('A/B experiments', abTable(reports)),
  );
  const first = champion || (models[0] || {}).version;
  if (first) await showCard(cardBox, first);
}
