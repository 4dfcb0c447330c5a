// The runs table of an experiment: params and latest metrics in cells, filters narrow it, a bad filter is
// reported, child runs are nested under their parent, selecting runs opens compare.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, num, assertClose } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

const vision = fixture.experiments['e2e-vision'];
const top = ['baseline', 'high-lr', 'small-batch'].map((n) => fixture.runs[n]);

/** Every rendered run row: id, depth and its cells by data-column. */
async function rows() {
  return page.$$eval(`${tid('runs-table')} ${tid('run-row')}`, (trs) =>
    trs.map((tr) => ({
      id: tr.dataset.runId,
      depth: Number(tr.dataset.depth),
      cells: Object.fromEntries([...tr.querySelectorAll('[data-testid="run-cell"]')]
        .map((td) => [td.dataset.column, td.textContent.trim()])),
    })));
}
const total = () => page.$eval(tid('runs-table'), (t) => Number(t.dataset.totalRuns));

async function openRuns(query = '') {
  await page.goto(`/experiments/${vision.id}${query}`);
  await page.waitForSelector(tid('run-row'));
}

test('runs table shows every run with its params and latest metric values', async () => {
  await openRuns();
  assert.equal(await total(), vision.run_count, 'data-total-runs without a filter');
  const shown = await rows();
  for (const run of top) {
    const row = shown.find((r) => r.id === run.id);
    assert.ok(row, `row for ${run.name}`);
    assert.equal(row.depth, 0, `${run.name} is top level`);
    assert.equal(row.cells.name, run.name);
    assert.match(row.cells.status, new RegExp(run.status, 'i'), `${run.name} status`);
    for (const [k, v] of Object.entries(run.params)) assert.equal(row.cells[`param:${k}`], v, `${run.name} param ${k}`);
    assertClose(num(row.cells['metric:loss']), run.loss, `${run.name} latest loss`);
    assertClose(num(row.cells['metric:acc']), run.acc, `${run.name} latest acc`);
  }
  await screenshot(page, 'runs-table');
});

test('child runs are nested under their parent', async () => {
  await openRuns();
  const parent = fixture.runs['high-lr'];
  let shown = await rows();
  if (!parent.children.every((c) => shown.some((r) => r.id === c))) {
    // Children may be collapsed under the parent: expand it.
    await page.click(`${tid('run-row', { 'run-id': parent.id })} ${tid('run-expand')}`);
    shown = await eventually(async () => {
      const r = await rows();
      return parent.children.every((c) => r.some((x) => x.id === c)) && r;
    }, 3000, 'children shown after expanding');
  }
  const at = shown.findIndex((r) => r.id === parent.id);
  const kids = shown.slice(at + 1, at + 1 + parent.children.length);
  assert.deepEqual(kids.map((r) => r.id).sort(), [...parent.children].sort(), 'children right after the parent');
  for (const k of kids) assert.equal(k.depth, 1, 'child depth 1');
  assert.deepEqual(kids.map((r) => r.cells.name).sort(), ['fold-1', 'fold-2']);
  assert.equal(kids.map((r) => r.cells['param:fold']).sort().join(','), '1,2');
});

async function applyFilter(text) {
  await page.fill(tid('runs-filter'), text);
  await page.press(tid('runs-filter'), 'Enter');
}

test('filter on a metric narrows data-total-runs and the rows', async () => {
  await openRuns();
  await applyFilter('metrics.loss < 0.5');
  const want = top.filter((r) => r.loss < 0.5).map((r) => r.id).sort(); // baseline, small-batch
  await eventually(async () => (await total()) === want.length, 3000, `data-total-runs = ${want.length}`);
  const shown = await eventually(async () => {
    const r = await rows();
    return r.length === want.length && r;
  }, 3000, `${want.length} rows`);
  assert.deepEqual(shown.map((r) => r.id).sort(), want);
  for (const r of shown) assert.ok(num(r.cells['metric:loss']) < 0.5, 'every shown loss < 0.5');
  assert.match(page.url(), /filter=/, 'the filter is in the URL (deep link)');
  await screenshot(page, 'runs-filtered');
});

test('filter on a param narrows the table, and the filter deep link works', async () => {
  await openRuns(`?filter=${encodeURIComponent("params.lr = '0.1'")}`);
  await eventually(async () => (await total()) === 1, 3000, 'one run with lr 0.1');
  const shown = await rows();
  assert.deepEqual(shown.map((r) => r.id), [fixture.runs.baseline.id]);
  assert.equal(await page.inputValue(tid('runs-filter')), "params.lr = '0.1'", 'filter input shows the deep-linked filter');
  await applyFilter("params.optimizer = 'sgd' and metrics.acc > 0.7");
  await eventually(async () => (await total()) === 1, 3000, 'sgd with acc > 0.7: baseline only');
  assert.deepEqual((await rows()).map((r) => r.id), [fixture.runs.baseline.id]);
});

test('a bad filter shows an error instead of rows', async () => {
  await openRuns();
  await applyFilter('metrics.loss <<< banana');
  const msg = await page.waitForSelector(tid('runs-filter-error'), { state: 'visible' });
  const text = (await msg.textContent()).trim();
  assert.ok(text.length > 5, `error message shown (got "${text}")`);
  await screenshot(page, 'runs-filter-error');
  await applyFilter('');
  await eventually(async () => (await total()) === vision.run_count, 3000, 'clearing the filter brings all runs back');
  assert.equal(await page.locator(tid('runs-filter-error')).count(), 0, 'error gone once the filter is cleared');
});

const header = () => page.$$eval(tid('runs-header'), (els) => els.map((e) => e.dataset.column).filter((k) => k.includes(':')));

test('choosing columns changes the header and the cells', async () => {
  await openRuns('?cols=metric:loss');
  assert.deepEqual(await header(), ['metric:loss'], 'only the deep-linked metric column');
  let shown = await rows();
  for (const run of top) {
    const cells = shown.find((r) => r.id === run.id).cells;
    assertClose(num(cells['metric:loss']), run.loss, `${run.name} loss`);
    assert.equal(cells['param:lr'], undefined, 'no lr column yet');
  }
  await page.click(tid('columns-button'));
  await page.check(tid('column-choice', { column: 'param:lr' }));
  await eventually(async () => (await header()).join() === 'metric:loss,param:lr', 2000, 'lr column added');
  await page.uncheck(tid('column-choice', { column: 'metric:loss' }));
  await page.check(tid('column-choice', { column: 'metric:acc' }));
  await eventually(async () => (await header()).join() === 'param:lr,metric:acc', 2000, 'loss removed, acc added');
  shown = await rows();
  for (const run of top) {
    const cells = shown.find((r) => r.id === run.id).cells;
    assert.equal(cells['param:lr'], run.params.lr, `${run.name} lr`);
    assertClose(num(cells['metric:acc']), run.acc, `${run.name} acc`);
    assert.equal(cells['metric:loss'], undefined, `${run.name}: no loss cell`);
  }
  assert.equal(new URL(page.url()).searchParams.get('cols'), 'param:lr,metric:acc', 'the choice is in the URL');
  await screenshot(page, 'runs-columns');
});

test('a status filter takes the status names the table shows', async () => {
  await openRuns();
  await applyFilter("attributes.status = 'Failed'");
  const failed = top.filter((r) => r.status === 'Failed').map((r) => r.id);
  await eventually(async () => (await total()) === failed.length, 3000, `${failed.length} failed run`);
  let shown = await rows();
  assert.deepEqual(shown.map((r) => r.id), failed);
  assert.match(shown[0].cells.status, /Failed/);
  await applyFilter("status = 'Completed'");
  const completed = vision.run_count - failed.length; // the child runs completed too
  await eventually(async () => (await total()) === completed, 3000, `${completed} completed runs`);
  shown = await rows();
  assert.ok(shown.length > 0 && shown.every((r) => /Completed/.test(r.cells.status)), 'every shown run is Completed');
  await applyFilter("status = 'FINISHED'");
  await eventually(async () => (await total()) === completed, 3000, "MLflow's name still works");
});

test('sort by a metric column orders the rows', async () => {
  await openRuns('?sort=metric:loss:asc');
  const ids = (await rows()).filter((r) => r.depth === 0).map((r) => r.id);
  const asc = [...top].sort((a, b) => a.loss - b.loss).map((r) => r.id);
  assert.deepEqual(ids, asc, 'top-level rows by ascending latest loss');
});

test('selecting two runs and pressing compare opens /compare with both', async () => {
  await openRuns();
  for (const name of ['baseline', 'small-batch']) {
    await page.check(`${tid('run-row', { 'run-id': fixture.runs[name].id })} ${tid('run-select')}`);
  }
  await page.click(tid('compare-button'));
  await page.waitForURL(/\/compare\?/);
  const ids = new URL(page.url()).searchParams.get('runs').split(',').sort();
  assert.deepEqual(ids, [fixture.runs.baseline.id, fixture.runs['small-batch'].id].sort());
});
