// Drift: the alerts of the last week (GET /v1/hrs/drift/alerts) and, on demand, a check now
// (POST /v1/hrs/drift/check) with its per-feature statistics.

import { get, post } from '../api.js';
import { h, fmt, panel, table, badge, toast } from '../ui.js';

function report(box, r) {
  box.replaceChildren(...r.models.map((m) => panel(`Check of ${m.model_version} (${m.alias || 'no alias'})`,
    h('p', {}, 'features: ', badge(m.features.status), ` · performance: `, badge(m.performance.status),
      m.performance.auroc ? ` · rolling AUROC ${fmt.num(m.performance.auroc.auroc, 3)} ${fmt.interval(m.performance.auroc.ci95, (x) => fmt.num(x, 3))} vs card ${fmt.num(m.performance.reference_auroc, 3)}` : ''),
    table(m.features.features || [], [
      { label: 'feature', get: (f) => f.name || f.feature },
      { label: 'KS D', get: (f) => fmt.num(f.ks_statistic) },
      { label: 'p (BH-adjusted)', get: (f) => fmt.num(f.ks_p_adjusted) },
      { label: 'PSI', get: (f) => fmt.num(f.psi) },
      { label: 'n / m', get: (f) => `${fmt.int(f.n)} / ${fmt.int(f.m)}` },
    ], { empty: 'No feature statistics (no reference or no decisions in the window).' }))));
  if (!r.models.length) box.replaceChildren(h('p', { class: 'empty' }, 'No model had decisions to check.'));
}

export async function render(root) {
  const alerts = await get('/v1/hrs/drift/alerts?since=168h&limit=500');
  const box = h('div', { id: 'drift-report' });
  root.append(
    h('h1', {}, 'Drift'),
    panel('Alerts, last 7 days', table(alerts, [
      { label: 'when', get: (a) => a.timestamp },
      { label: 'type', get: (a) => badge(a.type) },
      { label: 'test', get: (a) => a.test },
      { label: 'feature', get: (a) => a.feature || '–' },
      { label: 'statistic', get: (a) => fmt.num(a.statistic) },
      { label: 'p', get: (a) => fmt.num(a.p_value) },
      { label: 'threshold', get: (a) => fmt.num(a.threshold) },
      { label: 'severity', get: (a) => badge(a.severity) },
      { label: 'model', get: (a) => a.model_version },
      { label: 'action', get: (a) => a.action || '–' },
    ], { empty: 'No drift alert in the last 7 days.' })),
    h('div', { class: 'actions' }, h('button', {
      type: 'button', id: 'drift-check', onclick: async () => {
        try {
          report(box, await post('/v1/hrs/drift/check', {}));
        } catch (e) {
          toast(`Check failed: ${e.message}`, 'bad');
        }
      },
    }, 'Run a drift check now')),
    box);
}
