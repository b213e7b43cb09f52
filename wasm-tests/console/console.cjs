// Drives the operator console in Debian's headless Chromium with playwright-core (no browser
// download: executablePath is the system chromium). Run by wasm-tests/tests/e2e_console.rs,
// which starts the stack, seeds decisions and checks the outcome through the API.
//
// Input (environment): CONSOLE_URL, CONSOLE_TOKEN (the admin token), CONSOLE_REVIEWER,
// CHROMIUM, PLAYWRIGHT_DIR (the folder holding node_modules/playwright-core), SCREENSHOT_DIR,
// USER_DATA_DIR (a fresh, empty folder).
// Output: one JSON line on stdout {pages, figures, overview_kpis, kpi_table, kpi_plots, anomaly,
// audit, labelled}; exit 1 on any
// console error, page error, failed request or HTTP error answer.

'use strict';
const path = require('node:path');
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, 'node_modules', 'playwright-core'));

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

async function main() {
  const shots = env('SCREENSHOT_DIR');
  const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
    executablePath: env('CHROMIUM'),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
  });
  const problems = [];
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
  const ready = (id) => page.waitForSelector(`#page-${id}[data-ready="true"]`, { timeout: 30000 });
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  // Sign in.
  await page.goto(env('CONSOLE_URL'));
  await page.waitForSelector('#signin');
  await shot('00-signin');
  await page.fill('#token', env('CONSOLE_TOKEN'));
  await page.fill('#reviewer', env('CONSOLE_REVIEWER'));
  await page.click('#signin button[type=submit]');
  await ready('overview');

  // Every page of the navigation opens and shows no error.
  const ids = await page.$$eval('#nav a[data-page]', (as) => as.map((a) => a.dataset.page));
  const pages = [];
  for (const [i, id] of ids.entries()) {
    await page.click(`#nav a[data-page="${id}"]`);
    await ready(id);
    const errors = await page.$$eval(`#page-${id} .error`, (es) => es.map((e) => e.textContent));
    if (errors.length) problems.push(`${id}: ${errors.join('; ')}`);
    await shot(`${String(i + 1).padStart(2, '0')}-${id}`);
    pages.push(id);
  }

  // The overview's figures, as shown: the "now" figures, and the KPI panels of every window
  // picked in its selector (24 h first, as it opens).
  await page.click('#nav a[data-page="overview"]');
  await ready('overview');
  const figures = await page.$$eval('#page-overview [data-figure]', (fs) => Object.fromEntries(fs.map((f) => [f.dataset.figure, f.textContent])));
  const windows = await page.$$eval('#kpi-window option', (os) => os.map((o) => o.value));
  const kpiTexts = async (w) => {
    await page.selectOption('#kpi-window', w);
    await page.waitForSelector(`#kpis[data-window="${w}"][data-ready="true"]`);
    return page.$$eval('#kpis [data-kpi]', (fs) => Object.fromEntries(fs.map((f) => [f.dataset.kpi, f.textContent])));
  };
  const overviewKpis = {};
  for (const w of ['24h', ...windows.filter((w) => w !== '24h')]) overviewKpis[w] = await kpiTexts(w);
  await shot('overview-30d');
  await kpiTexts('24h');

  // The KPI page's table: every window side by side.
  await page.click('#nav a[data-page="kpis"]');
  await ready('kpis');
  const kpiTable = await page.$$eval('#page-kpis [data-kpi-window]', (cs) => {
    const out = {};
    for (const c of cs) (out[c.dataset.kpiWindow] ||= {})[c.dataset.kpi] = c.textContent;
    return out;
  });
  const kpiPlots = await page.$$eval('#page-kpis svg.plot', (ss) => ss.length);

  // The anomaly page: the tenant shown, its confusion matrix and rates, the ROC drawn.
  await page.click('#nav a[data-page="anomaly"]');
  await ready('anomaly');
  const anomaly = await page.evaluate(() => ({
    tenant: document.querySelector('#anomaly-tenant').value,
    figures: Object.fromEntries([...document.querySelectorAll('#page-anomaly [data-figure]')].map((f) => [f.dataset.figure, f.textContent])),
    cells: Object.fromEntries([...document.querySelectorAll('#anomaly-confusion [data-cell]')].map((f) => [f.dataset.cell, f.textContent])),
    roc_plotted: document.querySelector('#page-anomaly svg.plot[aria-label="anomaly ROC"]') !== null,
    history_rows: document.querySelectorAll('#page-anomaly table').length,
  }));

  // The audit page: the chain status, and the compliance report downloaded as JSON.
  await page.click('#nav a[data-page="audit"]');
  await ready('audit');
  const audit = await page.evaluate(() => ({
    figures: Object.fromEntries([...document.querySelectorAll('#page-audit [data-figure]')].map((f) => [f.dataset.figure, f.textContent])),
    controls: [...document.querySelectorAll('#compliance-report [data-control]')].map((r) => r.dataset.control),
  }));
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#compliance-json')]);
  audit.report_file = path.join(shots, 'compliance-soc2.json');
  await download.saveAs(audit.report_file);

  // Label the second decision of the queue with the keyboard: j, then h.
  await page.click('#nav a[data-page="review"]');
  await ready('review');
  await page.keyboard.press('?');
  await page.waitForSelector('#help:not([hidden])');
  await shot('review-help');
  await page.keyboard.press('?');
  await page.keyboard.press('j');
  const target = await page.$eval('#queue li.selected', (li) => li.dataset.pcsId);
  await page.keyboard.press('h');
  await page.waitForSelector(`#queue li[data-pcs-id="${target}"] .badge.hallucinated`, { timeout: 15000 });
  await shot('review-labelled');

  // Pause the canary with its button.
  await page.click('#nav a[data-page="canary"]');
  await ready('canary');
  await page.click('button:has-text("Pause")');
  // The page draws again after the request: wait for the new one to say pause(d).
  await page.waitForFunction(() => {
    const facts = document.querySelector('#page-canary[data-ready="true"] dl.facts');
    return facts !== null && /pause/.test(facts.textContent);
  });
  await shot('canary-paused');

  await context.close();
  process.stdout.write(`${JSON.stringify({ pages, figures, overview_kpis: overviewKpis, kpi_table: kpiTable, kpi_plots: kpiPlots, anomaly, audit, labelled: { pcs_id: target, label: 'hallucinated' } })}\n`);
  if (problems.length) {
    process.stderr.write(`console problems:\n${problems.join('\n')}\n`);
    process.exit(1);
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
