// The review queue (GET /v1/reviews): escalated and audit-sampled decisions with their reason,
// risk, features, votes and, for tenants opted in to retention, their evidence. Labels go
// through POST /v1/reviews/{tenant}/{pcs_id} as the signed-in reviewer (source gold).
// Keys: j / k move, h labels hallucinated, c labels correct (faithful), ? shows the keys.

import { get, post, session } from '../api.js';
import { h, fmt, panel, badge, toast, table } from '../ui.js';

const KEYS = [
  ['j', 'next decision'], ['k', 'previous decision'], ['h', 'label hallucinated'],
  ['c', 'label correct (faithful)'], ['?', 'show or hide these keys'],
];

export async function render(root, ctx) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const status = params.get('status') || 'open';
  const queuedFor = params.get('queued_for') || '';
  const q = new URLSearchParams({ status, limit: '200' });
  if (queuedFor) q.set('queued_for', queuedFor);
  const page = await get(`/v1/reviews?${q}`);
  const items = page.items;
  let at = 0;

  const select = (name, value, options) => h('select', {
    name, onchange: (e) => {
      params.set(name, e.target.value);
      location.hash = `#/review?${params}`;
    },
  }, options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));

  const list = h('ol', { class: 'queue', id: 'queue' });
  const detail = h('div', { class: 'detail', id: 'detail' });
  const help = h('div', { class: 'help', id: 'help', hidden: true },
    h('h3', {}, 'Keyboard shortcuts'), table(KEYS.map(([k, d]) => ({ k, d })), [
      { label: 'key', get: (r) => h('kbd', {}, r.k) }, { label: 'does', get: (r) => r.d }]));

  function drawList() {
    list.replaceChildren(...items.map((it, i) => h('li', {
      class: i === at ? 'selected' : '', 'data-pcs-id': it.pcs_id, onclick: () => { at = i; draw(); },
    },
    h('span', { class: 'risk' }, it.risk === null ? '–' : fmt.num(it.risk, 3)),
    h('span', { class: 'id' }, `${it.tenant} / ${it.pcs_id.slice(0, 12)}…`),
    badge(it.queued_for),
    it.effective_label ? badge(it.effective_label) : null)));
    const sel = list.children[at];
    if (sel) sel.scrollIntoView({ block: 'nearest' });
  }

  function drawDetail() {
    const it = items[at];
    if (!it) {
      detail.replaceChildren(h('p', { class: 'empty' }, 'The queue is empty: nothing waits for a label.'));
      return;
    }
    const names = it.feature_schema === page.feature_schema_version ? page.feature_names : [];
    const features = (it.features || []).map((v, i) => ({ name: names[i] || `#${i}`, v }));
    const votes = (it.votes && it.votes.votes) || [];
    const ev = it.evidence;
    detail.replaceChildren(...[
      h('h2', {}, `${it.tenant} / `, h('code', {}, it.pcs_id)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'queued for'), h('dd', {}, badge(it.queued_for)),
        h('dt', {}, 'reason'), h('dd', { 'data-field': 'reason' }, it.reason || '–'),
        h('dt', {}, 'risk'), h('dd', {}, `${fmt.num(it.risk, 4)} (${it.risk_band || '–'})`),
        h('dt', {}, 'model'), h('dd', {}, it.model_version || '–'),
        h('dt', {}, 'decided'), h('dd', {}, fmt.time(it.created_at_ms)),
        h('dt', {}, 'label'), h('dd', { 'data-field': 'label' }, it.effective_label || 'none yet'),
        it.votes ? [h('dt', {}, 'ensemble'), h('dd', {}, `${it.votes.verdict || ''} (policy ${it.votes.policy_id || '–'})`)] : null),
      ev ? panel('Evidence (retained until labelled)',
        h('h3', {}, 'Question'), h('p', { class: 'text' }, ev.question),
        h('h3', {}, 'Context'), h('p', { class: 'text' }, ev.context),
        h('h3', {}, 'Response'), h('p', { class: 'text', 'data-field': 'response' }, ev.response))
        : h('p', { class: 'note' }, it.evidence_retained ? 'Evidence retained but unreadable.'
          : 'No evidence retained for this decision (its tenant did not opt in, or it was labelled).'),
      votes.length ? panel('Votes', table(votes, [
        { label: 'strategy', get: (v) => v.strategy },
        { label: 'vote', get: (v) => badge(String(v.outcome)) },
        { label: 'confidence', get: (v) => fmt.num(v.confidence, 3) },
        { label: 'reason', get: (v) => v.reason || '–' },
      ])) : null,
      features.length ? panel(`Features as decided (${it.feature_schema})`, h('div', { class: 'features' },
        table(features, [{ label: 'feature', get: (f) => f.name }, { label: 'value', get: (f) => fmt.num(f.v, 4) }]))) : null,
      it.labels.length ? panel('Labels', table(it.labels, [
        { label: 'label', get: (l) => badge(l.label) }, { label: 'source', get: (l) => l.source },
        { label: 'by', get: (l) => l.labeller }, { label: 'at', get: (l) => fmt.time(l.created_at_ms) },
      ])) : null,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'bad', onclick: () => label('hallucinated') }, 'Hallucinated (h)'),
        h('button', { type: 'button', class: 'good', onclick: () => label('faithful') }, 'Correct (c)')),
    ].filter(Boolean));
  }

  function draw() {
    drawList();
    drawDetail();
  }

  async function label(value) {
    const it = items[at];
    if (!it) return;
    try {
      const row = await post(`/v1/reviews/${encodeURIComponent(it.tenant)}/${encodeURIComponent(it.pcs_id)}`,
        { label: value, reviewer: session.reviewer() });
      it.labels.push(row);
      it.effective_label = row.label;
      it.evidence = null;
      toast(`${it.pcs_id.slice(0, 12)}… labelled ${row.label} by ${row.labeller}`);
      if (at < items.length - 1) at += 1;
      draw();
    } catch (e) {
      toast(`Not labelled: ${e.message}`, 'bad');
    }
  }

  ctx.setKeys((ev) => {
    const k = ev.key;
    if (k === 'j') { at = Math.min(at + 1, items.length - 1); draw(); } else if (k === 'k') { at = Math.max(at - 1, 0); draw(); } else if (k === 'h') label('hallucinated');
    else if (k === 'c') label('faithful');
    else if (k === '?') help.hidden = !help.hidden;
    else return;
    ev.preventDefault();
  });

  root.append(
    h('h1', {}, 'Review queue'),
    h('div', { class: 'toolbar' },
      h('label', {}, 'Status ', select('status', status, [['open', 'open'], ['labelled', 'labelled'], ['all', 'all']])),
      h('label', {}, 'Queued for ', select('queued_for', queuedFor, [['', 'both'], ['escalated', 'escalated'], ['audit_sample', 'audit sample']])),
      h('span', { class: 'note' }, `${items.length}${page.next_cursor ? '+' : ''} decisions · labelling as `,
        h('strong', {}, session.reviewer()), ' · press ', h('kbd', {}, '?'), ' for keys')),
    help,
    h('div', { class: 'split' }, list, detail));
  draw();
}
