// Chart features on the run view's metrics tab, checked on the data each chart draws (`card.plotted`, see
// docs/portal.md): x = step / wall time / relative time, log scale with non-positive values, smoothing as a
// debiased EMA, server downsampling that keeps a single spike, a drag-zoom that reads finer detail of the
// range from the server; the histogram's bars and the confusion matrix's cells hold the logged numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openBrowser, screenshot, tid, fixture, eventually, api, assertClose, newRun, logScalars, gotoDrawn, plotted, dragX, complete,
} from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const charts = fixture.charts;
const chart = (metric) => tid('metric-chart', { metric });

/** Opens a run's metrics tab (the fixture's chart run unless told) and waits for the first screen of charts. */
const openMetrics = (id = charts.id, query = '') => gotoDrawn(page, `/runs/${id}?tab=metrics${query}`);

/** What a metric's chart draws: [xs, ys] as plain arrays (nulls where a value cannot be drawn). */
const drawn = (metric) => plotted(page, chart(metric));

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
  let [xs, ys] = await drawn('wave');
  assert.deepEqual(xs, series.steps, 'x = the logged steps');
  assertAllClose(ys, charts.wave, 'y = the logged values');

  await page.click('.chart-controls button[data-x="time"]');
  await eventually(async () => (await chartAttr('wave', 'data-x')) === 'time', 3000, 'wall-time axis');
  [xs, ys] = await drawn('wave');
  assert.deepEqual(xs, series.times.map((t) => t / 1e6), 'x = wall time in seconds');
  assertAllClose(ys, charts.wave, 'y unchanged on a wall-time axis');
  assert.match(page.url(), /[?&]x=time/);
  await screenshot(page, 'charts-x-wall-time');

  await page.click('.chart-controls button[data-x="relative"]');
  await eventually(async () => (await chartAttr('wave', 'data-x')) === 'relative', 3000, 'relative axis');
  [xs] = await drawn('wave');
  assert.deepEqual(xs, series.times.map((t) => (t - run.start_time) / 1e6), 'x = seconds since the run started');
  assert.ok(xs[0] >= 0 && xs[xs.length - 1] < 600, `relative times are seconds into the run (${xs[0]} … ${xs.at(-1)})`);
  assert.match(page.url(), /[?&]x=relative/);
});

test('log scale: the y scale turns logarithmic and non-positive values are left out', async () => {
  await openMetrics();
  assert.equal(await chartAttr('wave', 'data-y-scale'), 'linear');
  await page.check(tid('chart-log'));
  await eventually(async () => (await chartAttr('wave', 'data-y-scale')) === 'log', 3000, 'log y scale');
  const [, ys] = await drawn('wave');
  charts.wave.forEach((v, i) => {
    if (v > 0) assertClose(ys[i], v, `positive value ${i} drawn as logged`, 1e-9);
    else assert.equal(ys[i], null, `value ${v} at step ${i} is not drawn on a log scale`);
  });
  assert.match(page.url(), /[?&]log=1/);
  assert.deepEqual(page.errors, [], 'no page errors');
  await screenshot(page, 'charts-log-scale');
  await page.uncheck(tid('chart-log'));
  await eventually(async () => (await chartAttr('wave', 'data-y-scale')) === 'linear', 3000, 'back to linear');
  assert.equal((await drawn('wave'))[1][0], charts.wave[0], 'the negative value is drawn again');
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
    const [, y] = await drawn('wave');
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
  const [xs, ys] = await drawn('spiky');
  assert.ok(xs.length < charts.spiky_points / 20, `overview is downsampled (${xs.length} of ${charts.spiky_points} points)`);
  assert.equal(Number(await chartAttr('spiky', 'data-points')), xs.length, 'data-points = points drawn');
  const top = ys.indexOf(Math.max(...ys));
  assert.equal(ys[top], charts.spike_value, 'the spike survives downsampling');
  assert.equal(xs[top], charts.spike_step, 'at its own step');

  const request = page.waitForRequest((r) => r.url().includes('/metrics/spiky') && r.url().includes('min_step='));
  await dragX(page, chart('spiky'), 0.55, 0.65);
  const asked = new URL((await request).url()).searchParams;
  const lo = Number(asked.get('min_step'));
  const hi = Number(asked.get('max_step'));
  const n = charts.spiky_points;
  assertClose(lo, 0.55 * n, 'min_step ≈ the drag start', 0.02);
  assertClose(hi, 0.65 * n, 'max_step ≈ the drag end', 0.02);

  const before = inRange(xs, lo, hi);
  const zoomed = await eventually(async () => {
    const p = await drawn('spiky');
    return inRange(p[0], lo, hi) > 4 * before && p;
  }, 5000, `more than ${4 * before} points in [${lo}, ${hi}] after the zoom`);
  const after = inRange(zoomed[0], lo, hi);
  assert.ok(zoomed[1].includes(charts.spike_value), 'the spike is in the zoomed detail');
  await screenshot(page, 'charts-zoomed');

  await page.dblclick(`${chart('spiky')} .u-over`);
  await eventually(async () => inRange((await drawn('spiky'))[0], lo, hi) === before, 3000, 'double-click resets to the overview');
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

// --- chart fixes of the portal audit (auditK): each on a run of its own -----------------------------------------

test('a resumed run (steps going back) is drawn with ascending steps', async () => {
  const run = await newRun('portal-charts-extra', 'resumed');
  await logScalars(run.id, 'loss', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
  await logScalars(run.id, 'loss', [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [5.5, 5.2, 4.9, 4.6, 4.3, 4, 3.7, 3.4, 3.1, 2.8]);
  await openMetrics(run.id);
  const sorted = (xs) => xs.every((x, i) => i === 0 || x >= xs[i - 1]);
  let [xs, ys] = await drawn('loss');
  assert.equal(xs.length, 20, 'every point drawn');
  assert.ok(sorted(xs), `x ascending (got ${xs})`);
  // Points of one step stay in the order they were logged: the first run's value, then the resumed one's.
  const at5 = xs.indexOf(5);
  assert.deepEqual([ys[at5], ys[at5 + 1]], [5, 5.5], 'step 5: logged value, then the resumed value');
  // Live points with a step at or below the last one go in order too.
  await logScalars(run.id, 'loss', [3], [0.5]);
  [xs] = await eventually(async () => { const p = await drawn('loss'); return p[0].length === 21 && p; }, 2000, '21 points drawn');
  assert.ok(sorted(xs), `x still ascending after a live step 3 (got ${xs})`);
  await complete(run);
});

/** Hovers a chart at `step` and gives what its legend then shows for the (first) series. */
async function hoverStep(metric, step) {
  const sel = chart(metric);
  const box = await page.locator(`${sel} .u-over`).boundingBox();
  const lo = Number(await page.getAttribute(sel, 'data-x-min'));
  const hi = Number(await page.getAttribute(sel, 'data-x-max'));
  await page.mouse.move(box.x + (box.width * (step - lo)) / (hi - lo), box.y + box.height / 2);
  const legend = (row) => page.textContent(`${sel} .u-legend tr.u-series:nth-child(${row}) .u-value`);
  await eventually(async () => (await legend(1)).trim() === String(step), 2000, `${metric}: legend at step ${step}`);
  return (await legend(2)).trim();
}

test('NaN and ±Infinity are counted in the chart title, leave gaps and are named on hover', async () => {
  const run = await newRun('portal-charts-extra', 'nonfinite');
  const steps = Array.from({ length: 20 }, (_, i) => i);
  await logScalars(run.id, 'spiky', steps, steps.map((i) => (i === 10 ? 'Infinity' : i === 12 ? '-Infinity' : 1.0)));
  await logScalars(run.id, 'loss', steps, steps.map((i) => (i >= 15 ? 'NaN' : 1 / (i + 1))));
  await logScalars(run.id, 'clean', steps, steps.map((i) => i));
  await openMetrics(run.id);
  const badge = (m) => page.textContent(tid('metric-nonfinite', { metric: m }));
  assert.equal((await badge('spiky')).trim(), '1 +Inf · 1 −Inf');
  assert.equal((await badge('loss')).trim(), '5 NaN');
  assert.ok(await page.isHidden(tid('metric-nonfinite', { metric: 'clean' })), 'no badge on a finite series');
  const [xs, ys] = await drawn('spiky');
  assert.equal(ys[xs.indexOf(10)], null, 'the +Inf point is not drawn as a value');
  // A gap, not bridged: a line over it would hide the spike in a flat line.
  for (const m of ['spiky', 'loss']) assert.equal(await chartAttr(m, 'data-span-gaps'), 'false', `${m}: the line does not span gaps`);
  // The hover legend names what was logged where nothing is drawn.
  assert.equal(await hoverStep('spiky', 10), 'Infinity', 'the +Inf step reads Infinity');
  assert.equal(await hoverStep('spiky', 12), '-Infinity', 'the −Inf step reads -Infinity');
  assert.equal(await hoverStep('spiky', 11), '1', 'a finite step reads its value');
  assert.equal(await hoverStep('loss', 16), 'NaN', 'a NaN step reads NaN');
  await screenshot(page, 'charts-nonfinite');
  await complete(run);
});

test("metric names with '.' and '..' segments read their own series", async () => {
  const run = await newRun('portal-charts-extra', 'dot-names');
  await logScalars(run.id, 'eval/../loss', [0, 1], [1, 2]);
  await logScalars(run.id, 'loss', [0, 1], [7, 8]);
  await logScalars(run.id, 'a/./b', [0], [3]);
  await openMetrics(run.id);
  assert.deepEqual((await drawn('eval/../loss'))[1], [1, 2], 'eval/../loss is not loss');
  assert.deepEqual((await drawn('a/./b'))[1], [3], 'a/./b is found');
  assert.deepEqual((await drawn('loss'))[1], [7, 8]);
  await complete(run);
});

test('with many metrics, only the charts near the screen are read; the rest when scrolled to', async () => {
  const run = await newRun('portal-charts-extra', 'many-keys');
  const names = Array.from({ length: 80 }, (_, i) => `layer${String(i).padStart(3, '0')}/grad_norm`);
  await api('POST', `/api/v1/runs/${run.id}/batch`, { scalars: names.map((name, i) => ({ name, steps: [0, 1, 2], values: [i, i + 1, i + 2] })) });
  const reads = new Set();
  const onRequest = (r) => {
    const m = r.url().match(/\/metrics\/([^?]+)\?/);
    if (m) reads.add(decodeURIComponent(m[1]));
  };
  page.on('request', onRequest);
  await openMetrics(run.id);
  await new Promise((r) => setTimeout(r, 300));
  const first = reads.size;
  assert.ok(first > 0 && first < 40, `only the first screens are read (${first} of ${names.length})`);
  const last = tid('metric-chart', { metric: names.at(-1) });
  assert.equal(await page.getAttribute(last, 'data-drawn'), 'false', 'the last chart is not read yet');
  await page.locator(last).scrollIntoViewIfNeeded();
  await page.waitForSelector(`${last}[data-drawn="true"]`);
  assert.deepEqual((await drawn(names.at(-1)))[1], [79, 80, 81], 'the last chart drawn once scrolled to');
  page.off('request', onRequest);
  await complete(run);
});

test('a text series reads only the entries it shows and appends live ones without reading again', async () => {
  const run = await newRun('portal-charts-extra', 'texts');
  const n = 1200;
  await api('POST', `/api/v1/runs/${run.id}/batch`, {
    metrics: [{ kind: 'text', name: 'samples', steps: Array.from({ length: n }, (_, i) => i), values: Array.from({ length: n }, (_, i) => `sample ${i}`) }],
  });
  const reads = [];
  const onRequest = (r) => r.url().includes('/metrics/samples') && reads.push(r.url());
  page.on('request', onRequest);
  await openMetrics(run.id);
  const card = page.locator(tid('metric-text', { metric: 'samples' }));
  await eventually(async () => (await card.textContent()).includes(`sample ${n - 1}`), 3000, 'the newest entry shown');
  assert.equal(reads.length, 1, 'one read');
  assert.match(reads[0], new RegExp(`start_index=${n - 500}`), 'of the last 500 entries only');
  assert.equal(await card.locator('tr').count(), 500);
  await api('POST', `/api/v1/runs/${run.id}/batch`, { metrics: [{ kind: 'text', name: 'samples', steps: [n], values: ['live sample'] }] });
  await eventually(async () => (await card.textContent()).includes('live sample'), 2000, 'the live entry shown');
  assert.equal(reads.length, 1, 'the live entry came with its event: no read');
  assert.equal(await card.locator('tr').count(), 500, 'still the last 500');
  page.off('request', onRequest);
  await complete(run);
});

test('a long run name in a legend stays inside its chart card', async () => {
  const run = await newRun('portal-charts-extra', `a-very-long-run-name-${'x'.repeat(70)}`);
  await logScalars(run.id, 'a_loss', [0, 1], [1, 2]);
  await logScalars(run.id, 'b_loss', [0, 1], [1, 2]);
  await logScalars(run.id, 'c_loss', [0, 1], [1, 2]);
  await openMetrics(run.id);
  for (const m of ['a_loss', 'b_loss']) {
    const card = await page.locator(chart(m)).boundingBox();
    const legend = await page.locator(`${chart(m)} .u-legend`).boundingBox();
    assert.ok(legend.y + legend.height <= card.y + card.height + 1, `${m}: legend inside its card`);
    assert.ok(legend.x + legend.width <= card.x + card.width + 1, `${m}: legend no wider than its card`);
  }
  const a = await page.locator(chart('a_loss')).boundingBox();
  const c = await page.locator(chart('c_loss')).boundingBox();
  assert.ok(c.y >= a.y + a.height, 'the next row starts below the card');
  await complete(run);
});
