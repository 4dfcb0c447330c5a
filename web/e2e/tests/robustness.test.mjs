// Failures and odd states shown for what they are: failed reads (an error and a retry, never an empty chart
// marked drawn), a missing experiment, an artifact deleted since the listing, a malformed URL, a deleted run;
// and the keyboard/screen-reader basics of the runs table and the artifact tree.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, api, newRun, newPage, complete, imageColor } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const busy = (r) => r.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'BUSY', message: 'server busy' } }) });

test('failed reads show the error and a retry in the metrics, logs, artifacts and images tabs', async () => {
  const base = fixture.runs.baseline;
  const p = await newPage(page.context());
  await p.route('**/api/v1/runs/*/metrics/**', busy);
  await p.goto(`/runs/${base.id}?tab=metrics`);
  const loss = tid('metric-chart', { metric: 'loss' });
  await p.waitForSelector(`${loss} ${tid('load-error')}`);
  assert.match(await p.textContent(`${loss} ${tid('load-error')}`), /server busy/);
  assert.equal(await p.getAttribute(loss, 'data-drawn'), 'false', 'a failed chart is not marked drawn');
  await screenshot(p, 'error-metrics');
  await p.unroute('**/api/v1/runs/*/metrics/**');
  await p.click(`${loss} ${tid('load-retry')}`);
  await p.waitForSelector(`${loss}[data-drawn="true"]`);
  assert.equal(Number(await p.getAttribute(loss, 'data-points')), base.points, 'retry draws the chart');

  // Each tab's retry reads again and shows what it failed to show.
  const loaded = {
    logs: async () => (await p.textContent(tid('log-view'))).includes(base.stdout_line),
    artifacts: async () => (await p.locator(tid('artifact-item', { path: 'notes.txt' })).count()) === 1,
    images: async () => {
      const imgs = await p.locator(tid('gallery-image', { 'image-name': base.images.name })).all();
      return imgs.length === 1 && (await imageColor(imgs[0])) !== '';
    },
  };
  for (const [tab, pattern] of [['logs', '**/api/v1/runs/*/logs**'], ['artifacts', '**/api/v1/runs/*/artifacts**'], ['images', '**/api/v1/runs/*/metrics/**']]) {
    await p.route(pattern, busy);
    await p.goto(`/runs/${base.id}?tab=${tab}`);
    await eventually(async () => /server busy/.test((await p.textContent(tid('load-error')).catch(() => '')) ?? ''), 3000, `${tab}: error shown`);
    assert.ok(!(await loaded[tab]()), `${tab}: nothing shown while the read fails`);
    await p.unroute(pattern);
    await p.click(tid('load-retry'));
    await eventually(loaded[tab], 3000, `${tab}: retry shows the content`);
    assert.equal(await p.locator(tid('load-error')).count(), 0, `${tab}: the error goes after the retry`);
  }
  assert.deepEqual(p.errors, [], 'no uncaught errors');
  await p.close();
});

test('a missing experiment says so; a server error on the table is not blamed on the filter', async () => {
  await page.goto('/experiments/999');
  await page.waitForSelector(tid('experiment-not-found'));
  assert.match(await page.textContent(tid('experiment-not-found')), /Experiment 999 not found/);
  assert.equal(await page.locator(tid('runs-table')).count(), 0, 'no empty runs table');

  const exp = fixture.experiments['e2e-vision'].id;
  const p = await newPage(page.context());
  await p.route('**/api/v1/runs/table**', (r) => r.fulfill({ status: 502, contentType: 'text/html', body: '<h1>Bad Gateway</h1>' }));
  await p.goto(`/experiments/${exp}`);
  await p.waitForSelector(tid('load-error'));
  assert.equal(await p.locator(tid('runs-filter-error')).count(), 0, 'not shown as a filter error');
  await p.unroute('**/api/v1/runs/table**');
  await p.click(tid('load-retry'));
  await p.locator(tid('run-row')).first().waitFor();
  assert.equal(await p.locator(tid('load-error')).count(), 0, 'the error goes once the table reads');
  await p.close();
});

test('an artifact deleted since the listing shows an error, not the error JSON as its content', async () => {
  const run = await newRun('portal-robust', 'deleted-artifact');
  await api('PUT', `/api/v1/runs/${run.id}/artifacts/notes.txt`, 'hello', 'text/plain');
  // Without its event stream the page keeps the stale listing (as when the stream lags or is down).
  const p = await newPage(page.context());
  await p.route('**/api/v1/runs/*/events*', (r) => r.abort());
  await p.goto(`/runs/${run.id}?tab=artifacts`);
  await p.locator(tid('artifact-item', { path: 'notes.txt' })).waitFor();
  await api('DELETE', `/api/v1/runs/${run.id}/artifacts/notes.txt`);
  await p.click(tid('artifact-item', { path: 'notes.txt' }));
  const preview = p.locator(tid('artifact-preview'));
  await preview.locator(tid('load-error')).waitFor();
  const text = await preview.textContent();
  assert.match(text, /not found/i);
  assert.ok(!text.includes('{"error"'), 'no error JSON shown as file content');
  await p.close();
  await complete(run);
});

test('a malformed percent-escape in the URL shows "Not found"', async () => {
  await page.goto('/');
  page.errors = [];
  // Reached in the page (the dev server refuses such a URL itself; the flightlog server serves the portal).
  await page.evaluate(() => {
    history.pushState(null, '', '/experiments/%E0%A4%A');
    dispatchEvent(new PopStateEvent('popstate'));
  });
  await page.waitForSelector(tid('not-found'));
  assert.deepEqual(page.errors, [], 'no URIError');
});

test('a deleted run says it is deleted, and can be restored', async () => {
  const run = await newRun('portal-robust', 'deleted-run');
  await api('PATCH', `/api/v1/runs/${run.id}`, { lifecycle: 'deleted' });
  await page.goto(`/runs/${run.id}`);
  await page.waitForSelector(tid('run-deleted'));
  await screenshot(page, 'run-deleted');
  await page.evaluate(() => (window.beforeRestore = true));
  await page.click(tid('run-restore'));
  await eventually(async () => (await api('GET', `/api/v1/runs/${run.id}`)).lifecycle === 'active', 3000, 'run restored');
  await eventually(async () => (await page.locator(tid('run-deleted')).count()) === 0, 3000, 'banner gone after restore');
  // In place: a reload would race the next page the user opens (it interrupted the next test's navigation).
  assert.equal(await page.evaluate(() => window.beforeRestore), true, 'the page was not reloaded');
  await complete(run);
});

test('runs table: headers sort from the keyboard with aria-sort; checkboxes are labelled; select-all says when it caps', async () => {
  await page.goto(`/experiments/${fixture.experiments['e2e-vision'].id}`);
  await page.locator(tid('run-row')).first().waitFor();
  const user = tid('runs-header', { column: 'user' });
  assert.equal(await page.getAttribute(user, 'aria-sort'), 'none');
  await page.focus(user);
  await page.keyboard.press('Enter');
  await eventually(async () => (await page.getAttribute(user, 'aria-sort')) === 'ascending', 2000, 'Enter sorts ascending');
  await page.keyboard.press(' ');
  await eventually(async () => (await page.getAttribute(user, 'aria-sort')) === 'descending', 2000, 'Space sorts descending');
  assert.equal(await page.getAttribute(user, 'tabindex'), '0');
  const labels = await page.$$eval(tid('run-select'), (els) => els.map((e) => e.getAttribute('aria-label')));
  assert.ok(labels.length && labels.every((l) => /^Select run /.test(l)), `row checkboxes labelled (${labels})`);

  // More than 50 runs: "select all" says it took the first 50.
  let last;
  for (let i = 0; i < 55; i++) last = await newRun('portal-many-runs', `r${i}`);
  const total = (await api('GET', `/api/v1/runs/table?experiment_id=${last.experiment_id}`)).total;
  await page.goto(`/experiments/${last.experiment_id}`);
  await page.locator(tid('run-row')).first().waitFor();
  await page.check(tid('run-select-all'));
  assert.match(await page.textContent(tid('select-note')), new RegExp(`first 50 of ${total}`));
  assert.match(await page.textContent(tid('compare-button')), /Compare \(50\)/);
});

test('the artifact tree works from the keyboard', async () => {
  const base = fixture.runs.baseline;
  await page.goto(`/runs/${base.id}?tab=artifacts`);
  const item = tid('artifact-item', { path: 'notes.txt' });
  await page.locator(item).waitFor();
  await page.focus(item);
  await page.keyboard.press('Enter');
  await eventually(async () => (await page.textContent(tid('artifact-preview'))).includes(base.notes), 3000, 'Enter opens the file');
  const dir = tid('artifact-item', { path: 'config/' });
  assert.equal(await page.getAttribute(dir, 'aria-expanded'), 'true');
  await page.focus(dir);
  await page.keyboard.press(' ');
  await eventually(async () => (await page.getAttribute(dir, 'aria-expanded')) === 'false', 2000, 'Space folds the folder');
  assert.equal(await page.locator(tid('artifact-item', { path: 'config/train.json' })).count(), 0);
});
