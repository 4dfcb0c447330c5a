// Chart features on the run view's metrics tab, checked on the data each chart draws (`card.plotted`, see
// docs/portal.md): x = step / wall time / relative time, log scale with non-positive values, smoothing as a
// debiased EMA, server downsampling that keeps a single spike, a drag-zoom that reads finer detail of the
// range from the server; the histogram's bars and the confusion matrix's cells hold the logged numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, api, assertClose } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const charts = fixture.charts;
const chart = (metric) => tid('metric-chart', { metric });

async function openMetrics(query = '') {
  await page.goto(`/runs/${charts.id}?tab=metrics${query}`);
  await page.waitForFunction(() => window.__flightlog?.chartsDrawn === true);
}

/** What a chart draws: [xs, ys] as plain arrays (nulls where a value cannot be drawn). */
function plotted(metric) {
  return page.$eval(chart(metric), (e) => e.plotted && e.plotted.map((a) => Array.from(a)));
}

const chartAttr = (metric, name) => page.getAttribute(chart(metric), name);

/** The debiased exponential moving average the portal's smoothing promises (TensorBoard's). */
function ema(values, w) {
  let last = 0;
  return values.map((v, i) => {
    last = last * w + (1 - w) * v;
    return last / (1 - w ** (i + 1));
  });
}

function assertAllClose(actual, expected, what, tol = 1e-9) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => assertClose(a, expected[i], `${what}[${i}]`, tol));
}

test('x axis: step, wall time and relative time plot the logged steps and times', async () => {
  const series = await api('GET', `/api/v1/runs/${charts.id}/metrics/wave`);
  const run = await api('GET', `/api/v1/runs/${charts.id}`);
  await openMetrics();
  assert.equal(await chartAttr('wave', 'data-x'), 'step');
  let [xs, ys] = await plotted('wave');
  assert.deepEqual(xs, series.steps, 'x = the logged steps');
  assertAllClose(ys, charts.wave, 'y = the logged values');

  await page.click('.chart-controls button[data-x="time"]');
  await eventually(async () => (await chartAttr('wave', 'data-x')) === 'time', 3000, 'wall-time axis');
  [xs, ys] = await plotted('wave');
  assert.deepEqual(xs, series.times.map((t) => t / 1e6), 'x = wall time in seconds');
  assertAllClose(ys, charts.wave, 'y unchanged on a wall-time axis');
  assert.match(page.url(), /[?&]x=time/);
  await screenshot(page, 'charts-x-wall-time');

  await page.click('.chart-controls button[data-x="relative"]');
  await eventually(async () => (await chartAttr('wave', 'data-x')) === 'relative', 3000, 'relative axis');
  [xs] = await plotted('wave');
  assert.deepEqual(xs, series.times.map((t) => (t - run.start_time) / 1e6), 'x = seconds since the run started');
  assert.ok(xs[0] >= 0 && xs[xs.length - 1] < 600, `relative times are seconds into the run (${xs[0]} … ${xs.at(-1)})`);
  assert.match(page.url(), /[?&]x=relative/);
});

test('log scale: the y scale turns logarithmic and non-positive values are left out', async () => {
  await openMetrics();
  assert.equal(await chartAttr('wave', 'data-y-scale'), 'linear');
  await page.check(tid('chart-log'));
  await eventually(async () => (await chartAttr('wave', 'data-y-scale')) === 'log', 3000, 'log y scale');
  const [, ys] = await plotted('wave');
  charts.wave.forEach((v, i) => {
    if (v > 0) assertClose(ys[i], v, `positive value ${i} drawn as logged`, 1e-9);
    else assert.equal(ys[i], null, `value ${v} at step ${i} is not drawn on a log scale`);
  });
  assert.match(page.url(), /[?&]log=1/);
  assert.deepEqual(page.errors, [], 'no page errors');
  await screenshot(page, 'charts-log-scale');
  await page.uncheck(tid('chart-log'));
  await eventually(async () => (await chartAttr('wave', 'data-y-scale')) === 'linear', 3000, 'back to linear');
  assert.equal((await plotted('wave'))[1][0], charts.wave[0], 'the negative value is drawn again');
});

test('smoothing draws the EMA of the logged values', async () => {
  await openMetrics();
  const w = 0.6;
  await page.$eval(tid('chart-smoothing'), (e, v) => {
    e.value = String(v);
    e.dispatchEvent(new Event('input', { bubbles: true }));
  }, w);
  const expected = ema(charts.wave, w);
  const ys = await eventually(async () => {
    const [, y] = await plotted('wave');
    return Math.abs(y[5] - charts.wave[5]) > 1e-6 && y;
  }, 3000, 'smoothed series drawn');
  assertAllClose(ys, expected, 'smoothed y');
  const furthest = Math.max(...ys.map((y, i) => Math.abs(y - charts.wave[i])));
  assert.ok(furthest > 0.3, `smoothing changes the drawn values (by up to ${furthest})`);
  assert.match(page.url(), /[?&]smooth=0\.6/);
  await screenshot(page, 'charts-smoothing');
});

const inRange = (xs, lo, hi) => xs.filter((x) => x >= lo && x <= hi).length;

test('the overview keeps the spike; a drag-zoom reads the range again with more points', async () => {
  await openMetrics();
  const [xs, ys] = await plotted('spiky');
  assert.ok(xs.length < charts.spiky_points / 20, `overview is downsampled (${xs.length} of ${charts.spiky_points} points)`);
  assert.equal(Number(await chartAttr('spiky', 'data-points')), xs.length, 'data-points = points drawn');
  const top = ys.indexOf(Math.max(...ys));
  assert.equal(ys[top], charts.spike_value, 'the spike survives downsampling');
  assert.equal(xs[top], charts.spike_step, 'at its own step');

  const box = await page.locator(`${chart('spiky')} .u-over`).boundingBox();
  const request = page.waitForRequest((r) => r.url().includes('/metrics/spiky') && r.url().includes('min_step='));
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * 0.55, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, y, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.65, y, { steps: 5 });
  await page.mouse.up();
  const asked = new URL((await request).url()).searchParams;
  const lo = Number(asked.get('min_step'));
  const hi = Number(asked.get('max_step'));
  const n = charts.spiky_points;
  assertClose(lo, 0.55 * n, 'min_step ≈ the drag start', 0.02);
  assertClose(hi, 0.65 * n, 'max_step ≈ the drag end', 0.02);

  const before = inRange(xs, lo, hi);
  const zoomed = await eventually(async () => {
    const p = await plotted('spiky');
    return inRange(p[0], lo, hi) > 4 * before && p;
  }, 5000, `more than ${4 * before} points in [${lo}, ${hi}] after the zoom`);
  const after = inRange(zoomed[0], lo, hi);
  assert.ok(zoomed[1].includes(charts.spike_value), 'the spike is in the zoomed detail');
  await screenshot(page, 'charts-zoomed');

  await page.dblclick(`${chart('spiky')} .u-over`);
  await eventually(async () => inRange((await plotted('spiky'))[0], lo, hi) === before, 3000, 'double-click resets to the overview');
  assert.ok(after > 4 * before, `zoom: ${before} → ${after} points in the range`);
});

test('a histogram draws one bar per bucket, as tall as its count', async () => {
  await openMetrics();
  const canvas = page.locator(`${tid('metric-histogram', { metric: 'weights' })} canvas`);
  const { counts } = charts.histogram;
  const heights = await eventually(async () => {
    const h = await canvas.evaluate((cv, n) => {
      const g = cv.getContext('2d');
      const px = g.getImageData(0, 0, cv.width, cv.height).data;
      const bw = cv.width / n;
      const isBar = (x, y) => {
        const i = (y * cv.width + x) * 4;
        return px[i + 3] > 200 && px[i + 2] > 200 && px[i] < 120; // the bars' blue, #3d6df2
      };
      return Array.from({ length: n }, (_, b) => {
        const x = Math.floor(b * bw + bw / 2);
        let count = 0;
        for (let y = 0; y < cv.height; y++) if (isBar(x, y)) count++;
        return count;
      });
    }, counts.length);
    return h.some((v) => v > 0) && h;
  }, 3000, 'histogram bars painted');
  const tallest = Math.max(...counts);
  const plotHeight = 200 - 20; // the canvas height less its label strip
  counts.forEach((c, i) => {
    const want = (c / tallest) * plotHeight;
    assert.ok(Math.abs(heights[i] - want) <= 2, `bar ${i}: ${heights[i]} px for count ${c} (want ${want.toFixed(1)})`);
  });
  await screenshot(page, 'charts-histogram');
});

test('a confusion matrix shows its labels and logged counts as a heatmap', async () => {
  await openMetrics();
  const table = page.locator(`${tid('metric-json', { metric: 'confusion' })} table`);
  await table.waitFor();
  const { class_labels: labels, matrix } = charts.confusion;
  const heads = await table.locator('tr').first().locator('th').allTextContents();
  assert.deepEqual(heads.map((t) => t.trim()).filter(Boolean), labels, 'predicted-class labels as column heads');
  const cells = await table.evaluate((t) => [...t.querySelectorAll('tr')].slice(1).map((tr) => ({
    label: tr.querySelector('th').textContent.trim(),
    cells: [...tr.querySelectorAll('td')].map((td) => ({ text: td.textContent.trim(), title: td.title, bg: td.style.background })),
  })));
  const max = Math.max(...matrix.flat());
  assert.deepEqual(cells.map((r) => r.label), labels, 'true-class labels as row heads');
  matrix.forEach((row, i) => row.forEach((v, j) => {
    const cell = cells[i].cells[j];
    assert.equal(Number(cell.text), v, `cell (${labels[i]}, ${labels[j]})`);
    assert.equal(cell.title, `true ${labels[i]} · predicted ${labels[j]}: ${v}`, 'cell title names its classes');
    const rgba = cell.bg.match(/rgba\([^)]*,\s*([\d.]+)\)/);
    const alpha = rgba ? Number(rgba[1]) : 1; // an opaque shade reads back as rgb(...)
    assertClose(alpha, 0.08 + (0.92 * v) / max, `cell (${i}, ${j}) shade follows its count`, 1 / 255); // 8-bit alpha
  }));
  await screenshot(page, 'charts-confusion-matrix');
});
