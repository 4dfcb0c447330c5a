// Live updates: with the run view open, a metric value, a log line, an image and a status change logged through
// the API show up within 2 s without a reload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openBrowser, screenshot, tid, eventually, num, assertClose, api, newRun, logScalars, pngBytes, logImage, imageColor,
} from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const LIVE_MS = 2000;

test('a metric value logged while the page is open appears within 2 s', async (t) => {
  const run = await newRun('portal-live', 'live-metric', { lr: '0.2' });
  await logScalars(run.id, 'loss', [0, 1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6, 0.5]);
  await page.goto(`/runs/${run.id}?tab=metrics`);
  await page.waitForFunction(() => window.__flightlog?.chartsDrawn === true);
  const chart = page.locator(tid('metric-chart', { metric: 'loss' }));
  assert.equal(await chart.getAttribute('data-points'), '5');
  const latest = page.locator(tid('metric-latest', { metric: 'loss' }));
  assertClose(num(await latest.textContent()), 0.5, 'latest before');

  const t0 = Date.now();
  await logScalars(run.id, 'loss', [5], [0.123]);
  await eventually(async () => Math.abs(num(await latest.textContent()) - 0.123) < 1e-6, LIVE_MS, 'metric-latest shows 0.123');
  await eventually(async () => (await chart.getAttribute('data-points')) === '6', LIVE_MS, 'chart has 6 points');
  const ms = Date.now() - t0;
  t.diagnostic(`metric value shown ${ms} ms after it was logged`);
  assert.ok(ms <= LIVE_MS, `shown after ${ms} ms`);

  // Points logged one per request: the server keeps one growing event per series, and the page must still
  // get each point once.
  for (let k = 6; k < 16; k++) await logScalars(run.id, 'loss', [k], [0.5 - k / 100]);
  await eventually(async () => (await chart.getAttribute('data-points')) === '16', LIVE_MS, 'chart has 16 points');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await chart.getAttribute('data-points'), '16', 'no point drawn twice');

  // A new metric logged live gets its own chart.
  await logScalars(run.id, 'grad_norm', [0, 1], [3.5, 2.5]);
  const grad = page.locator(tid('metric-chart', { metric: 'grad_norm' }));
  await eventually(async () => (await grad.getAttribute('data-points')) === '2', LIVE_MS, 'a new metric appears live with 2 points');
  await screenshot(page, 'live-metrics');
  await api('PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
});

test('after the stream reconnects, points the page holds are not drawn again', async () => {
  const run = await newRun('portal-live', 'live-reconnect');
  await logScalars(run.id, 'acc', [0, 1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4, 0.5]);
  // A page whose event streams can be dropped: each EventSource is wrapped so that drop() does what the browser
  // does when a connection breaks, reconnect resuming after the last event it got (with ?after=, the query
  // form of Last-Event-ID).
  const p = await page.context().newPage();
  await p.addInitScript(() => {
    const Native = window.EventSource;
    window.__streams = [];
    window.EventSource = class {
      constructor(url) {
        this.url = url; this.listeners = []; this.lastId = null; this.opened = 0;
        this.open(url);
        window.__streams.push(this);
      }
      open(url) { this.es = new Native(url); this.opened += 1; for (const [t, f] of this.listeners) this.attach(t, f); }
      attach(t, f) { this.es.addEventListener(t, (m) => { if (m.lastEventId) this.lastId = m.lastEventId; f(m); }); }
      addEventListener(t, f) { this.listeners.push([t, f]); this.attach(t, f); }
      close() { this.es.close(); }
      drop() {
        this.es.close();
        const u = new URL(this.url, location.href);
        u.searchParams.set('after', this.lastId);
        this.open(u.toString());
      }
    };
  });
  await p.goto(`/runs/${run.id}?tab=metrics`);
  await p.waitForFunction(() => window.__flightlog?.chartsDrawn === true);
  const chart = p.locator(tid('metric-chart', { metric: 'acc' }));
  await logScalars(run.id, 'acc', [5], [0.6]);
  await eventually(async () => (await chart.getAttribute('data-points')) === '6', LIVE_MS, 'chart has 6 points');
  // While the stream is down, the server merges the series' newest points event (the one that brought point 5)
  // with four more: the stream resumed after it replays an event that starts at point 5 again.
  await p.evaluate(() => window.__streams.forEach((s) => s.es.close()));
  for (let k = 6; k < 10; k++) await logScalars(run.id, 'acc', [k], [0.1 * k]);
  await p.evaluate(() => window.__streams.forEach((s) => s.drop()));
  await eventually(async () => (await chart.getAttribute('data-points')) === '10', 5000, 'chart has 10 points');
  assert.ok(await p.evaluate(() => window.__streams.some((s) => s.opened > 1)), 'a stream reconnected');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await chart.getAttribute('data-points'), '10', 'point 5 not drawn twice');
  await p.close();
});

test('a log line logged while the logs tab is open appears within 2 s', async (t) => {
  const run = await newRun('portal-live', 'live-logs');
  await api('POST', `/api/v1/runs/${run.id}/logs/stdout`, 'first line\n', 'application/octet-stream');
  await page.goto(`/runs/${run.id}?tab=logs`);
  const view = page.locator(tid('log-view'));
  await eventually(async () => (await view.textContent()).includes('first line'), 3000, 'existing log shown');
  const t0 = Date.now();
  await api('POST', `/api/v1/runs/${run.id}/logs/stdout`, 'live line 42\n', 'application/octet-stream');
  await eventually(async () => (await view.textContent()).includes('live line 42'), LIVE_MS, 'live log line shown');
  t.diagnostic(`log line shown ${Date.now() - t0} ms after it was appended`);
  assert.ok(Date.now() - t0 <= LIVE_MS);
  assert.equal(((await view.textContent()).match(/first line/g) || []).length, 1, 'earlier text not repeated');
  await screenshot(page, 'live-logs');
  await api('PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
});

test('an image logged while the images tab is open shows within 2 s', async (t) => {
  const run = await newRun('portal-live', 'live-image');
  const red = [200, 30, 30];
  const blue = [30, 30, 200];
  await logImage(run.id, 'frames', 0, pngBytes(40, 30, red));
  await page.goto(`/runs/${run.id}?tab=images`);
  const img = page.locator(tid('gallery-image', { 'image-name': 'frames' }));
  await eventually(async () => (await imageColor(img)) === red.join(','), 5000, 'the step 0 image (red) shown');
  const t0 = Date.now();
  await logImage(run.id, 'frames', 1, pngBytes(40, 30, blue));
  await eventually(async () => (await img.getAttribute('data-step')) === '1' && (await imageColor(img)) === blue.join(','),
    LIVE_MS, 'the step 1 image (blue) shown live');
  const ms = Date.now() - t0;
  t.diagnostic(`image shown ${ms} ms after it was logged`);
  assert.ok(ms <= LIVE_MS, `shown after ${ms} ms`);
  assert.equal(await page.getAttribute(tid('image-step-slider'), 'max'), '1', 'the slider spans both steps');
  await screenshot(page, 'live-image');
  await api('PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
});

test('the first image of a run shows live in an empty images tab', async () => {
  const run = await newRun('portal-live', 'live-first-image');
  await page.goto(`/runs/${run.id}?tab=images`);
  await page.getByText('No images logged yet.').waitFor();
  const green = [30, 180, 30];
  await logImage(run.id, 'samples', 0, pngBytes(40, 30, green));
  const img = page.locator(tid('gallery-image', { 'image-name': 'samples' }));
  await eventually(async () => (await imageColor(img)) === green.join(','), LIVE_MS, 'the first image shown live');
  assert.equal(await page.getByText('No images logged yet.').count(), 0, 'the "no images" note is gone');
  await api('PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
});

test('a status change shows live in the run header', async (t) => {
  const run = await newRun('portal-live', 'live-status');
  await page.goto(`/runs/${run.id}`);
  const status = page.locator(tid('run-status'));
  await eventually(async () => (await status.textContent()).trim() === 'Running', 5000, 'run-status Running');
  const t0 = Date.now();
  await api('PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
  await eventually(async () => (await status.textContent()).trim() === 'Completed', LIVE_MS, 'status Completed shown live');
  t.diagnostic(`status shown ${Date.now() - t0} ms after the change`);
  assert.ok(Date.now() - t0 <= LIVE_MS);
});

test('the runs table shows a new run and a new latest value live', async () => {
  const first = await newRun('portal-table-live', 'table-live-1');
  await logScalars(first.id, 'loss', [0], [0.9]);
  const exp = await api('GET', '/api/v1/experiments/by-name/portal-table-live');
  await page.goto(`/experiments/${exp.id}`);
  const cell = page.locator(`${tid('run-row', { 'run-id': first.id })} [data-testid="run-cell"][data-column="metric:loss"]`);
  await eventually(async () => num(await cell.textContent()) === 0.9, 3000, 'loss 0.9 shown');
  const t0 = Date.now();
  await logScalars(first.id, 'loss', [1], [0.42]);
  await eventually(async () => num(await cell.textContent()) === 0.42, LIVE_MS, 'latest loss 0.42 shown live');
  const second = await newRun('portal-table-live', 'table-live-2');
  await eventually(async () => (await page.locator(tid('run-row', { 'run-id': second.id })).count()) === 1, LIVE_MS, 'new run row live');
  const total = await page.$eval(tid('runs-table'), (t) => Number(t.dataset.totalRuns));
  assert.equal(total, 2, 'data-total-runs counts the new run');
  assert.ok(Date.now() - t0 <= 2 * LIVE_MS);
  for (const r of [first, second]) await api('PATCH', `/api/v1/runs/${r.id}`, { status: 'Completed' });
});
