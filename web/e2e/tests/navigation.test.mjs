// Deep links and browser history: clicking through experiments → runs → a run → a tab, then back and forward,
// each URL showing its view; a deep link opens a run's tab directly; MLflow UI links open the matching view.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, tid, fixture } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const vision = fixture.experiments['e2e-vision'];
const base = fixture.runs.baseline;

test('click through, then back and forward restore each view', async () => {
  await page.goto('/');
  await page.click(`${tid('experiment-row', { 'experiment-id': vision.id })} [data-testid="experiment-name"]`);
  await page.waitForURL(new RegExp(`/experiments/${vision.id}`));
  await page.waitForSelector(tid('runs-table'));
  await page.click(`${tid('run-row', { 'run-id': base.id })} [data-testid="run-cell"][data-column="name"] >> visible=true`);
  await page.waitForURL(new RegExp(`/runs/${base.id}`));
  await page.waitForSelector(tid('run-overview'));
  await page.getByRole('link', { name: /^metrics$/i }).or(page.getByRole('tab', { name: /^metrics$/i }))
    .or(page.getByRole('button', { name: /^metrics$/i })).first().click();
  await page.waitForURL(/tab=metrics/);
  await page.waitForSelector(tid('metric-chart'));

  await page.goBack();
  await page.waitForSelector(tid('run-overview'));
  assert.ok(!page.url().includes('tab=metrics'), `back to the overview (${page.url()})`);
  await page.goBack();
  await page.waitForSelector(tid('runs-table'));
  assert.match(page.url(), new RegExp(`/experiments/${vision.id}`));
  await page.goBack();
  await page.waitForSelector(tid('experiments-table'));
  assert.equal(new URL(page.url()).pathname, '/');
  await page.goForward();
  // The table is there at once; its total is set with the first rows (after the stream opens and the read).
  await page.locator(tid('run-row')).first().waitFor();
  assert.match(page.url(), new RegExp(`/experiments/${vision.id}`));
  const total = await page.$eval(tid('runs-table'), (t) => Number(t.dataset.totalRuns));
  assert.equal(total, vision.run_count, 'runs table after forward shows the experiment');
  await page.goForward();
  await page.goForward();
  await page.waitForURL(/tab=metrics/);
  await page.waitForSelector(tid('metric-chart', { metric: 'loss' }));
});

test('deep links open each view directly', async () => {
  await page.goto(`/runs/${base.id}?tab=artifacts`);
  await page.waitForSelector(tid('artifact-list'));
  await page.goto(`/runs/${base.id}?tab=logs`);
  await page.waitForSelector(tid('log-view'));
  await page.goto(`/compare?runs=${base.id},${fixture.runs['small-batch'].id}&tab=table`);
  await page.waitForSelector(tid('compare-table'));
  const res = await page.goto(`/experiments/${vision.id}?filter=${encodeURIComponent('metrics.acc > 0.85')}`);
  assert.equal(res.status(), 200, 'a deep link is served (SPA fallback)');
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="runs-table"]')?.dataset.totalRuns) === 1);
});

test('the MLflow UI links the mlflow client prints open the same run, experiment or comparison', async () => {
  const other = fixture.runs['small-batch'];
  await page.goto(`/#/experiments/${vision.id}/runs/${base.id}`);
  await page.waitForSelector(tid('run-overview'));
  assert.equal(new URL(page.url()).pathname, `/runs/${base.id}`, 'the run link becomes the run page');
  assert.equal(new URL(page.url()).hash, '', 'the MLflow hash is gone, so back and reload keep the run');

  await page.goto(`/#/experiments/${vision.id}/runs/${base.id}/artifacts/model/MLmodel`);
  await page.waitForSelector(tid('artifact-list'));

  await page.goto(`/#/experiments/${vision.id}`);
  await page.locator(tid('run-row')).first().waitFor();
  const total = await page.$eval(tid('runs-table'), (t) => Number(t.dataset.totalRuns));
  assert.equal(total, vision.run_count, 'the experiment link shows that experiment');

  const runs = encodeURIComponent(JSON.stringify([base.id, other.id]));
  await page.goto(`/#/compare-runs?runs=${runs}&experiments=${encodeURIComponent(`["${vision.id}"]`)}`);
  await page.waitForURL(/\/compare\?/);
  const compared = new URL(page.url()).searchParams.get('runs').split(',');
  assert.deepEqual(compared, [base.id, other.id], 'the comparison holds both runs');
  await page.waitForFunction(() => window.__flightlog?.chartsDrawn === true);

  await page.goto(`/#/not-an-mlflow-view`);
  await page.waitForSelector(tid('experiments-table'));
  assert.equal(new URL(page.url()).pathname, '/', 'any other hash leaves the experiments list as it was');
});
