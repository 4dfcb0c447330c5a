// Compare: a metric overlaid across the selected runs, the table of params and final metrics with the
// differing ones marked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const a = fixture.runs.baseline;
const b = fixture.runs['high-lr'];

test('compare overlays a metric of two runs', async () => {
  await page.goto(`/compare?runs=${a.id},${b.id}&tab=metrics`);
  await page.waitForFunction(() => window.__flightlog?.chartsDrawn === true);
  const charts = await page.$$eval(tid('compare-chart'), (els) => Object.fromEntries(els.map((e) => [e.dataset.metric, {
    series: Number(e.dataset.series), points: Number(e.dataset.points),
  }])));
  for (const m of ['loss', 'acc']) {
    assert.ok(charts[m], `compare chart for ${m} (got ${Object.keys(charts)})`);
    assert.equal(charts[m].series, 2, `${m}: two runs overlaid`);
    assert.equal(charts[m].points, a.points + b.points, `${m}: both runs' points drawn`);
  }
  await screenshot(page, 'compare-metrics');
});

test('compare table marks the params that differ', async () => {
  await page.goto(`/compare?runs=${a.id},${b.id}&tab=table`);
  await page.locator(`${tid('compare-table')} ${tid('compare-row')}`).first().waitFor();
  const rows = await page.$$eval(`${tid('compare-table')} ${tid('compare-row')}`, (trs) =>
    Object.fromEntries(trs.map((t) => [t.dataset.key, { differs: t.dataset.differs === 'true', text: t.textContent }])));
  const key = (k) => rows[k] ?? rows[`params.${k}`] ?? rows[`param:${k}`];
  assert.ok(key('lr'), `a row for param lr (keys ${Object.keys(rows)})`);
  assert.equal(key('lr').differs, true, 'lr differs (0.1 vs 0.5)');
  assert.ok(key('lr').text.includes('0.1') && key('lr').text.includes('0.5'), 'both lr values shown');
  assert.equal(key('batch_size').differs, false, 'batch_size is the same (32)');
  assert.equal(key('optimizer').differs, false, 'optimizer is the same (sgd)');
  const loss = rows.loss ?? rows['metrics.loss'] ?? rows['metric:loss'];
  assert.ok(loss, 'a row for the final loss');
  assert.equal(loss.differs, true, 'final losses differ');
  await screenshot(page, 'compare-table');
});
