// Canaries: the deployment (GET /v1/operator/canary/status), its steps, gates and events
// (GET /v1/operator/canary/{id}/events), and the operator's pause / resume / abort
// (POST /v1/operator/canary/{id}/pause|resume|abort; the leader applies them at its next tick).

import { get, post } from '../api.js';
import { h, fmt, panel, table, badge, toast, orNone } from '../ui.js';
import { linePlot } from '../plot.js';

const ACTIVE = ['pending', 'running', 'paused'];

function armTable(check) {
  const rows = [['canary', check.canary], ['control', check.control]];
  return table(rows, [
    { label: 'arm', get: ([n]) => badge(n) },
    { label: 'requests', get: ([, a]) => fmt.int(a.requests) },
    { label: 'escalation', get: ([, a]) => fmt.pct(a.escalation_rate) },
    { label: 'p95 latency', get: ([, a]) => (a.p95_ms === null ? '–' : `${fmt.num(a.p95_ms, 2)} ms`) },
    { label: 'labelled (hallucinated)', get: ([, a]) => `${fmt.int(a.labelled)} (${fmt.int(a.labelled_hallucinated)})` },
    { label: 'contained / escaped', get: ([, a]) => `${fmt.int(a.contained)} / ${fmt.int(a.escaped)}` },
  ]);
}

export async function render(root, ctx) {
  root.append(h('h1', {}, 'Canaries'));
  const d = await orNone(get('/v1/operator/canary/status'));
  if (!d) {
    root.append(panel('No canary deployment yet',
      h('p', {}, 'Start one with ', h('code', {}, 'kakeya canary start'), ' or POST /v1/operator/canary/start.')));
    return;
  }
  const events = await get(`/v1/operator/canary/${encodeURIComponent(d.id)}/events`);
  const act = (what) => async () => {
    try {
      const r = await post(`/v1/operator/canary/${encodeURIComponent(d.id)}/${what}`);
      toast(`${what} requested: ${r.requested || r.status}`);
      ctx.reload();
    } catch (e) {
      toast(`${what} refused: ${e.message}`, 'bad');
    }
  };
  const active = ACTIVE.includes(d.status);
  // The schedule as a staircase: each step's weight over the time since the start.
  let t = 0;
  const stairs = [];
  for (const s of d.steps) {
    stairs.push([t / 60000, 100 * s.weight]);
    t += s.duration_ms;
    stairs.push([t / 60000, 100 * s.weight]);
  }
  const reached = stairs.slice(0, 2 * (d.current_step + 1));
  root.append(
    panel(`${d.name} `,
      h('dl', { class: 'facts' },
        h('dt', {}, 'deployment'), h('dd', {}, h('code', {}, d.id)),
        h('dt', {}, 'status'), h('dd', { 'data-field': 'canary-status' }, badge(d.status)),
        h('dt', {}, 'control → canary'), h('dd', {}, `${d.control_version} → ${d.canary_version}`),
        h('dt', {}, 'step'), h('dd', {}, `${d.current_step + 1} of ${d.total_steps}`),
        h('dt', {}, 'traffic'), h('dd', {}, `${fmt.num(d.traffic_percent, 1)} %`),
        h('dt', {}, 'step due'), h('dd', {}, fmt.time(d.step_due_at_ms)),
        h('dt', {}, 'requested'), h('dd', {}, d.requested || '–')),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: act('pause'), disabled: !active || d.status === 'paused' }, 'Pause'),
        h('button', { type: 'button', onclick: act('resume'), disabled: d.status !== 'paused' }, 'Resume'),
        h('button', { type: 'button', class: 'bad', onclick: act('abort'), disabled: !active }, 'Abort'))),
    h('div', { class: 'split' },
      panel('Steps', linePlot({
        title: 'canary weight by step', xLabel: 'minutes since start', yLabel: 'canary traffic %', y: [0, 100],
        series: [{ label: 'schedule', points: stairs, class: 'muted' }, { label: 'reached', points: reached }],
      }), table(d.steps, [
        { label: 'step', get: (s) => s.n + 1 }, { label: 'weight', get: (s) => fmt.pct(s.weight, 1) },
        { label: 'duration', get: (s) => `${Math.round(s.duration_ms / 1000)} s` }, { label: 'status', get: (s) => badge(s.status) },
      ])),
      panel('Gates (latest health check)', d.last_check ? [
        h('p', {}, 'Recommendation: ', badge(String(d.last_check.recommendation)), ` · checked ${fmt.time(d.last_check.at_ms)}`),
        table(d.last_check.gates, [
          { label: 'gate', get: (g) => g.gate }, { label: 'status', get: (g) => badge(String(g.status)) },
          { label: 'margin', get: (g) => fmt.num(g.margin, 3) }, { label: 'detail', get: (g) => g.detail || '–' },
        ]),
        armTable(d.last_check),
      ] : h('p', { class: 'empty' }, 'No health check yet: the first comes at the leader\'s next tick.'))),
    panel('Events', table(events.slice().reverse(), [
      { label: 'when', get: (e) => fmt.time(e.at_ms) }, { label: 'event', get: (e) => badge(e.kind) },
      { label: 'status', get: (e) => `${e.from_status} → ${e.to_status}` }, { label: 'step', get: (e) => e.step + 1 },
      { label: 'weight', get: (e) => fmt.pct(e.weight, 1) }, { label: 'reason', get: (e) => e.reason },
    ])),
  );
}
