// The WORM audit log: the chain re-walked now (GET /v1/audit/verify: every entry's SHA-256 link
// and every checkpoint's Ed25519 signature), the newest checkpoint in its anchoring export
// (GET /v1/audit/checkpoints/latest), the newest entries (GET /v1/audit/entries), and a
// compliance report of a period (GET /v1/compliance/report) shown as its controls and offered
// as the JSON or HTML file the API returns.

import { get } from '../api.js';
import { h, fmt, panel, table, badge, toast, orNone } from '../ui.js';

const NEWEST = 20;
const DAY = 86400000;

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

const short = (hex) => (hex ? h('code', { title: hex }, `${hex.slice(0, 16)}…`) : '–');

function checkpointFacts(c) {
  return facts([
    ['entries', `${c.seq_from} to ${c.seq_to}`], ['sealed', fmt.time(c.created_at_ms)],
    ['head hash', short(c.head_hash)], ['segment root', short(c.segment_root)],
    ['key id', h('code', {}, c.key_id)], ['signature', short(c.signature)],
  ]);
}

/** Saves `text` as a file named `name` (a blob: link; nothing leaves the browser). */
function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function reportQuery(framework, from, to, format) {
  return `/v1/compliance/report?framework=${framework}&from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&format=${format}`;
}

function compliance() {
  const now = Date.now();
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const framework = h('select', { id: 'compliance-framework', 'aria-label': 'framework' },
    h('option', { value: 'soc2' }, 'SOC 2'), h('option', { value: 'iso27001' }, 'ISO 27001'));
  const from = h('input', { type: 'text', id: 'compliance-from', value: iso(now - 30 * DAY), size: 22, 'aria-label': 'from (RFC 3339)' });
  const to = h('input', { type: 'text', id: 'compliance-to', value: iso(now + 60000), size: 22, 'aria-label': 'to (RFC 3339)' });
  const box = h('div', { id: 'compliance-report' });
  const args = () => [framework.value, from.value.trim(), to.value.trim()];
  const show = async () => {
    box.dataset.ready = 'false';
    try {
      const r = await get(reportQuery(...args(), 'json'));
      box.replaceChildren(
        h('p', { class: 'note' }, `${r.title}: ${r.from} to ${r.to}, generated ${r.generated_at} by ${r.generator}`),
        table(r.controls, [
          { label: 'control', get: (c) => h('code', {}, c.id) }, { label: 'title', get: (c) => c.title },
          { label: 'status', get: (c) => badge(c.status, c.status === 'pass' ? 'passed' : c.status === 'fail' ? 'failed' : 'pending') },
          { label: 'evidence figures', get: (c) => fmt.int(c.evidence.length) }, { label: 'claim', get: (c) => c.claim },
        ], { rowAttrs: (c) => ({ 'data-control': c.id }) }));
    } catch (e) {
      box.replaceChildren(h('p', { class: 'empty' }, `No report: ${e.message}`));
    } finally {
      box.dataset.ready = 'true';
    }
  };
  const save = (format) => async () => {
    try {
      const [fw, f, t] = args();
      const r = await get(reportQuery(fw, f, t, format));
      download(`kakeya-${fw}-report.${format}`, format === 'json' ? 'application/json' : 'text/html',
        format === 'json' ? `${JSON.stringify(r, null, 2)}\n` : r);
    } catch (e) {
      toast(`No report: ${e.message}`, 'bad');
    }
  };
  const el = panel('Compliance report (GET /v1/compliance/report)',
    h('div', { class: 'toolbar' }, framework, h('label', {}, 'from ', from), h('label', {}, 'to ', to),
      h('button', { type: 'button', id: 'compliance-show', onclick: show }, 'Show'),
      h('button', { type: 'button', id: 'compliance-json', onclick: save('json') }, 'Download JSON'),
      h('button', { type: 'button', id: 'compliance-html', onclick: save('html') }, 'Download HTML')),
    h('p', { class: 'note' }, 'Every figure of a report carries its source: the query (listed in the report) or the audit-log range and the verified checkpoint covering it.'),
    box);
  return { el, show };
}

export async function render(root) {
  const v = await get('/v1/audit/verify');
  // The whole chain was walked: no checkpoint checked means none sealed (no 404 to ask for).
  const latest = v.checkpoints_checked > 0 ? await orNone(get('/v1/audit/checkpoints/latest')) : null;
  const head = v.to_seq;
  const page = head >= 1 ? await get(`/v1/audit/entries?from_seq=${Math.max(1, head - NEWEST + 1)}&limit=${NEWEST}`) : { entries: [] };
  const c = compliance();
  root.append(
    h('h1', {}, 'Audit log'),
    panel('Chain verification (GET /v1/audit/verify)',
      h('p', { class: v.ok ? 'ok-line' : 'bad-line', 'data-figure': 'audit_status' },
        v.ok ? 'verified: every link and every checkpoint signature checks' : `BROKEN at seq ${v.first_break.seq}: ${v.first_break.problem}`),
      facts([
        ['entries checked', h('span', { 'data-figure': 'audit_entries' }, fmt.int(v.entries_checked))],
        ['checkpoints checked', h('span', { 'data-figure': 'audit_checkpoints' }, fmt.int(v.checkpoints_checked))],
        ['range', `seq ${v.from_seq} to ${v.to_seq}`], ['verified with key', h('code', {}, v.key_id)],
        ['first break', v.first_break ? `${v.first_break.seq} ${v.first_break.problem}: ${v.first_break.detail}` : 'none'],
      ])),
    h('div', { class: 'split' },
      panel('Newest verified checkpoint', v.last_verified_checkpoint ? checkpointFacts(v.last_verified_checkpoint)
        : h('p', { class: 'empty' }, 'No checkpoint verified yet (segments are sealed on the [audit] cadence, KAKEYA_AUDIT_CHECKPOINT_EVERY).')),
      panel('Latest checkpoint, anchoring export (GET /v1/audit/checkpoints/latest)', latest
        ? h('div', {}, checkpointFacts(latest.checkpoint),
          facts([['format', latest.format], ['message imprint', h('span', {}, `${latest.message_imprint.hash_algorithm} `, short(latest.message_imprint.hashed_message))]]),
          h('button', { type: 'button', id: 'anchor-json', onclick: () => download(`kakeya-audit-anchor-${latest.checkpoint.seq_to}.json`, 'application/json', `${JSON.stringify(latest, null, 2)}\n`) }, 'Download anchor JSON'))
        : h('p', { class: 'empty' }, 'Nothing sealed yet.'))),
    panel(`Newest entries (GET /v1/audit/entries, up to ${NEWEST})`, table(page.entries.slice().reverse(), [
      { label: 'seq', get: (e) => e.seq }, { label: 'when', get: (e) => fmt.time(e.ts_ms) },
      { label: 'kind', get: (e) => badge(e.kind) }, { label: 'subject', get: (e) => h('code', {}, e.subject) },
      { label: 'hash', get: (e) => short(e.hash) },
    ], { empty: 'The audit log is empty.' })),
    c.el,
  );
  await c.show();
}
