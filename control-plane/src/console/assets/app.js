// The console's shell: sign-in, navigation and the page router (`#/<page>`).
// Adding a page: a module in pages/ exporting `render(root, ctx)`, one entry below, one line in
// control-plane/src/console/mod.rs (ASSETS). See docs/CONSOLE.md.

import { session, checkToken, whenUnauthorized } from './api.js';
import { h, toast } from './ui.js';

const PAGES = [
  { id: 'overview', title: 'Overview', load: () => import('./pages/overview.js') },
  { id: 'review', title: 'Review queue', load: () => import('./pages/review.js') },
  { id: 'models', title: 'Models', load: () => import('./pages/models.js') },
  { id: 'canary', title: 'Canaries', load: () => import('./pages/canary.js') },
  { id: 'drift', title: 'Drift', load: () => import('./pages/drift.js') },
  { id: 'cost', title: 'Cost', load: () => import('./pages/cost.js') },
  { id: 'kpis', title: 'KPIs', load: () => import('./pages/kpis.js') },
  { id: 'anomaly', title: 'Anomalies', load: () => import('./pages/anomaly.js') },
  { id: 'audit', title: 'Audit', load: () => import('./pages/audit.js') },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logout = document.getElementById('logout');
/** The keyboard handler of the page on screen (the review queue's shortcuts). */
let onKey = null;

function signIn(message) {
  nav.replaceChildren();
  logout.hidden = true;
  onKey = null;
  const token = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true,
    placeholder: 'contents of admin.token' });
  const reviewer = h('input', { type: 'text', id: 'reviewer', value: session.reviewer(), required: true,
    maxlength: 128 });
  const error = h('p', { class: 'error', id: 'signin-error' }, message || '');
  const form = h('form', { class: 'signin panel', id: 'signin' },
    h('h2', {}, 'Sign in'),
    h('p', {}, 'The admin token is in ', h('code', {}, '$KAKEYA_DATA_DIR/admin.token'),
      ' (or run ', h('code', {}, 'kakeya config admin-token'), '). It stays in this tab only.'),
    h('label', {}, 'Admin token', token),
    h('label', {}, 'Reviewer name (stored as the labeller)', reviewer),
    error,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = token.value.trim();
    if (!(await checkToken(t))) {
      error.textContent = 'That token was refused (401). Copy it again from admin.token.';
      return;
    }
    session.save(t, reviewer.value.trim() || 'console');
    start();
  });
  main.replaceChildren(form);
  token.focus();
}

function drawNav(current) {
  nav.replaceChildren(...PAGES.map((p) => h('a', { href: `#/${p.id}`, class: p.id === current ? 'active' : '',
    'data-page': p.id }, p.title)));
  logout.hidden = false;
}

async function route() {
  if (!session.token()) return signIn();
  const id = (location.hash.match(/^#\/([a-z-]+)/) || [])[1] || 'overview';
  const page = PAGES.find((p) => p.id === id) || PAGES[0];
  drawNav(page.id);
  document.title = `${page.title} · Kakeya Edge`;
  onKey = null;
  const root = h('div', { class: 'page', id: `page-${page.id}`, 'aria-busy': 'true' });
  main.replaceChildren(root);
  const ctx = { setKeys: (f) => { onKey = f; }, reload: route };
  try {
    const mod = await page.load();
    await mod.render(root, ctx);
  } catch (e) {
    if (e.status === 401) return;
    root.append(h('p', { class: 'error' }, `Could not load this page: ${e.message}`));
    console.error(e);
  } finally {
    root.setAttribute('aria-busy', 'false');
    root.dataset.ready = 'true';
  }
}

function start() {
  route();
}

document.addEventListener('keydown', (ev) => {
  const t = ev.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (onKey) onKey(ev);
});

logout.addEventListener('click', () => { session.clear(); signIn(); });
whenUnauthorized(() => { session.clear(); signIn('The admin API refused the token (401): sign in again.'); });
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => toast(String(e.reason && e.reason.message), 'bad'));
start();
