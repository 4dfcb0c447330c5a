// Compare: a metric overlaid across the selected runs, images of the same name side by side, the table of params
// and final metrics with the differing ones marked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, imageColor, newRun, logScalars, gotoDrawn, dragX, complete } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const a = fixture.runs.baseline;
const b = fixture.runs['high-lr'];

test('compare overlays a metric of two runs', async () => {
  await gotoDrawn(page, `/compare?runs=${a.id},${b.id}&tab=metrics`);
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

test('compare shows images of the same name side by side, following the step slider', async () => {
  await page.goto(`/compare?runs=${a.id},${b.id}&tab=images`);
  const sel = tid('gallery-image', { 'image-name': a.images.name });
  const colors = { [a.id]: a.sample_colors, [b.id]: b.images.colors };
  /** Each run's image: its step, position and pixel colour, once both have loaded. */
  const shown = () => eventually(async () => {
    const imgs = await page.locator(sel).all();
    const out = [];
    for (const img of imgs) {
      const box = await img.boundingBox();
      out.push({ run: await img.getAttribute('data-run-id'), step: Number(await img.getAttribute('data-step')), color: await imageColor(img), box });
    }
    return out.length === 2 && out.every((o) => o.color) && out;
  }, 5000, 'two loaded images');
  const check = (imgs, step) => {
    assert.deepEqual(imgs.map((i) => i.run).sort(), [a.id, b.id].sort(), 'one image per run');
    for (const i of imgs) {
      assert.equal(i.step, step, `image of ${i.run} at step ${step}`);
      assert.equal(i.color, colors[i.run][step].join(','), `image of ${i.run} at step ${step} is its own`);
    }
    const [l, r] = [...imgs].sort((x, y) => x.box.x - y.box.x);
    assert.ok(Math.abs(l.box.y - r.box.y) < 1 && r.box.x >= l.box.x + l.box.width, 'side by side in one row');
  };
  check(await shown(), 2);
  await screenshot(page, 'compare-images');
  await page.locator(tid('image-step-slider')).evaluate((e) => {
    e.value = '0';
    e.dispatchEvent(new Event('input', { bubbles: true }));
  });
  await eventually(async () => (await page.$$eval(sel, (els) => els.map((e) => e.dataset.step))).join() === '0,0', 2000, 'both at step 0');
  check(await shown(), 0);
});

test('a live point keeps the zoom of a compare chart', async () => {
  const steps = Array.from({ length: 200 }, (_, i) => i);
  const runs = [];
  for (const name of ['zoom-a', 'zoom-b']) {
    const r = await newRun('portal-compare-live', name);
    await logScalars(r.id, 'loss', steps, steps.map((i) => 1 / (i + 1)));
    runs.push(r);
  }
  await gotoDrawn(page, `/compare?runs=${runs.map((r) => r.id).join(',')}&tab=metrics`);
  const chart = tid('compare-chart', { metric: 'loss' });
  await dragX(page, chart, 0.2, 0.4);
  const range = async () => [Number(await page.getAttribute(chart, 'data-x-min')), Number(await page.getAttribute(chart, 'data-x-max'))];
  const [lo, hi] = await eventually(async () => { const r = await range(); return r[1] > r[0] && r[1] < 120 && r; }, 3000, 'zoomed in');
  await logScalars(runs[0].id, 'loss', [200], [0]);
  await eventually(async () => Number(await page.getAttribute(chart, 'data-points')) === 401, 3000, 'the live point drawn');
  await new Promise((r) => setTimeout(r, 500));
  const [lo2, hi2] = await range();
  assert.ok(Math.abs(lo2 - lo) < 1 && Math.abs(hi2 - hi) < 1, `zoom kept: [${lo}, ${hi}] → [${lo2}, ${hi2}]`);
  await complete(...runs);
});
