// The run view: overview fields, one chart per metric with the logged points, list/row/table metrics (chart and
// table values), the image gallery and its step slider, logs by stream, artifacts with preview, child runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, num, assertClose } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const base = fixture.runs.baseline;

/** Every metric-chart on the page once all have drawn: {metric: {series, points}}. */
async function charts() {
  // chartsDrawn can be set before list/row/table cards, which make their chart once their read answers, exist.
  await page.waitForFunction(() => {
    const els = [...document.querySelectorAll('[data-testid="metric-chart"]')];
    return window.__flightlog?.chartsDrawn === true && els.length > 0 && els.every((e) => e.dataset.drawn === 'true');
  });
  return page.$$eval(tid('metric-chart'), (els) => Object.fromEntries(els.map((e) => [e.dataset.metric, {
    series: Number(e.dataset.series), points: Number(e.dataset.points), drawn: e.dataset.drawn,
  }])));
}

test('overview shows status, times, params, tags and properties', async () => {
  await page.goto(`/runs/${base.id}`);
  await eventually(async () => (await page.textContent(tid('run-status'))).trim() === 'Completed', 5000, 'run-status Completed');
  const overview = page.locator(tid('run-overview'));
  await overview.waitFor();
  const fields = await page.$$eval(`${tid('run-overview')} [data-testid="overview-field"]`, (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.field, e.textContent.trim()])));
  for (const f of ['status', 'start_time', 'duration', 'host']) assert.ok(fields[f], `overview field ${f} (got ${Object.keys(fields)})`);
  assert.match(fields.status, /Completed/);
  const text = await overview.textContent();
  for (const [k, v] of Object.entries(base.params)) {
    assert.ok(text.includes(k) && text.includes(v), `param ${k}=${v} shown`);
  }
  for (const s of ['model', 'cnn', 'dataset', 'mnist-v1', 'e2e run baseline']) assert.ok(text.includes(s), `overview shows "${s}"`);
  await screenshot(page, 'run-overview');
});

test('a failed run shows its status and error details', async () => {
  const run = fixture.runs['small-batch'];
  await page.goto(`/runs/${run.id}`);
  await eventually(async () => (await page.textContent(tid('run-status'))).trim() === 'Failed', 5000, 'run-status Failed');
  await page.locator(tid('run-overview')).waitFor();
  const text = await page.textContent(tid('run-overview'));
  assert.ok(text.includes('diverged at step 49'), 'error message shown');
  assert.ok(text.includes('E2E_DIVERGED'), 'error code shown');
  await screenshot(page, 'run-overview-failed');
});

test('metrics tab draws one chart per metric with the logged points', async () => {
  await page.goto(`/runs/${base.id}?tab=metrics`);
  const c = await charts();
  assert.deepEqual(Object.keys(c).sort(), ['acc', 'loss', 'lr_schedule', 'pr', 'roc'], 'one chart per (non-image) metric');
  for (const m of ['loss', 'acc']) {
    assert.equal(c[m].series, 1, `${m}: one series`);
    assert.equal(c[m].points, base.points, `${m}: ${base.points} points drawn`);
    assert.equal(c[m].drawn, 'true');
  }
  assert.equal(c.lr_schedule.points, base.lr_schedule.length, 'list metric: one point per list value');
  assert.equal(c.roc.points, base.roc_rows, 'row metric: one point per row');
  assert.equal(c.pr.points, base.pr.recall.length, 'table metric: one point per table row');
  const latest = await page.$$eval(tid('metric-latest'), (els) => Object.fromEntries(els.map((e) => [e.dataset.metric, e.textContent.trim()])));
  assertClose(num(latest.loss), base.loss, 'latest loss');
  assertClose(num(latest.acc), base.acc, 'latest acc');
  // The chart is really painted: the canvas is not blank.
  const painted = await page.$eval(`${tid('metric-chart', { metric: 'loss' })} canvas`, (cv) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  assert.ok(painted > 500, `loss chart canvas has ink (${painted} pixels)`);
  await screenshot(page, 'run-metrics');
});

test('row and table metrics render a table with the logged values', async () => {
  await page.goto(`/runs/${base.id}?tab=metrics`);
  await charts();
  const table = async (m) => page.$$eval(`${tid('metric-table', { metric: m })} td`, (tds) => tds.map((t) => t.textContent.trim()));
  const pr = await table('pr');
  for (const v of [...base.pr.recall, ...base.pr.precision]) {
    assert.ok(pr.some((t) => Math.abs(num(t) - v) < 1e-9), `pr table shows ${v} (cells ${pr})`);
  }
  assert.equal(pr.length, 2 * base.pr.recall.length, 'pr table: 3 rows × 2 columns');
  const roc = await table('roc');
  assert.equal(roc.length, 2 * base.roc_rows, 'roc table: 4 rows × 2 columns');
  assert.ok(roc.some((t) => num(t) === 0.85), 'roc table shows tpr 0.85');
});

test('images tab shows the logged image with a step slider', async () => {
  await page.goto(`/runs/${base.id}?tab=images`);
  const gallery = page.locator(tid('image-gallery'));
  await gallery.waitFor();
  const img = page.locator(tid('gallery-image', { 'image-name': base.images.name })).first();
  await img.waitFor();
  await eventually(() => img.evaluate((e) => e.complete && e.naturalWidth === 48), 3000, 'the 48-px image loaded');
  const slider = page.locator(tid('image-step-slider')).first();
  assert.equal(Number(await slider.getAttribute('min')), 0);
  assert.equal(Number(await slider.getAttribute('max')), 2, 'slider spans steps 0..2 (also as indices 0..2)');
  const stepOf = () => img.getAttribute('data-step');
  await slider.evaluate((e) => { e.value = '1'; e.dispatchEvent(new Event('input', { bubbles: true })); e.dispatchEvent(new Event('change', { bubbles: true })); });
  await eventually(async () => (await stepOf()) === '1', 2000, 'image at step 1 after moving the slider');
  const color = async () => img.evaluate((e) => {
    const c = document.createElement('canvas');
    c.width = e.naturalWidth; c.height = e.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(e, 0, 0);
    return [...g.getImageData(5, 5, 1, 1).data.slice(0, 3)].join(',');
  });
  await eventually(async () => (await color()) === '40,180,40', 2000, 'step 1 image is the green one');
  await screenshot(page, 'run-images');
});

test('logs tab shows each stream', async () => {
  await page.goto(`/runs/${base.id}?tab=logs`);
  const view = page.locator(tid('log-view'));
  await view.waitFor();
  const select = page.locator(tid('log-stream-select'));
  const options = await select.locator('option').evaluateAll((os) => os.map((o) => o.value || o.textContent.trim()));
  assert.ok(options.includes('python') && options.includes('stdout'), `streams python and stdout offered (got ${options})`);
  await select.selectOption('python');
  await eventually(async () => (await view.textContent()).includes(base.log_line), 3000, 'python log shown');
  const text = await view.textContent();
  assert.equal((text.match(/epoch \d finished/g) || []).length, 3, 'three epoch lines');
  await screenshot(page, 'run-logs');
  await page.fill(tid('log-search'), 'epoch 3');
  await eventually(async () => ((await view.textContent()).match(/epoch \d finished/g) || []).join() === 'epoch 3 finished',
    2000, 'search keeps only the matching line');
  await page.fill(tid('log-search'), '');
  await eventually(async () => ((await view.textContent()).match(/epoch \d finished/g) || []).length === 3, 2000, 'all lines back');
  await select.selectOption('stdout');
  await eventually(async () => (await view.textContent()).includes(base.stdout_line), 3000, 'stdout shown');
  assert.ok(!(await view.textContent()).includes('epoch 2 finished'), 'stdout view does not show the python stream');
});

test('artifacts tab lists files and previews a text file', async () => {
  await page.goto(`/runs/${base.id}?tab=artifacts`);
  await page.locator(tid('artifact-list')).waitFor();
  await page.locator(tid('artifact-item')).first().waitFor(); // the listing loads after the tab
  const paths = await page.$$eval(tid('artifact-item'), (els) => els.map((e) => e.dataset.path));
  assert.ok(paths.includes('notes.txt'), `notes.txt listed (got ${paths})`);
  if (!paths.includes('config/train.json')) {
    await page.click(`${tid('artifact-item', { path: 'config' })}, ${tid('artifact-item', { path: 'config/' })}`);
  }
  await page.locator(tid('artifact-item', { path: 'config/train.json' })).waitFor();
  await page.click(tid('artifact-item', { path: 'notes.txt' }));
  const preview = page.locator(tid('artifact-preview'));
  await eventually(async () => (await preview.textContent()).includes(base.notes), 3000, 'notes.txt previewed');
  await screenshot(page, 'run-artifacts');
  await page.click(tid('artifact-item', { path: 'config/train.json' }));
  await eventually(async () => (await preview.textContent()).includes('"epochs"'), 3000, 'JSON artifact previewed');
});

test('children tab lists the child runs', async () => {
  const parent = fixture.runs['high-lr'];
  await page.goto(`/runs/${parent.id}?tab=children`);
  await page.locator(`${tid('child-runs')} ${tid('run-row')}`).first().waitFor();
  const ids = await page.$$eval(`${tid('child-runs')} ${tid('run-row')}`, (trs) => trs.map((t) => t.dataset.runId));
  assert.deepEqual(ids.sort(), [...parent.children].sort());
  await screenshot(page, 'run-children');
});
