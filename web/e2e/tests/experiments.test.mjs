// The experiments list: every logged experiment with its run count; search narrows the list; dark theme.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, screenshot, tid, fixture, eventually, num } from '../lib.mjs';

let browser, page;
before(async () => ({ browser, page } = await openBrowser()));
after(async () => browser?.close());

async function rows() {
  return page.$$eval(`${tid('experiments-table')} ${tid('experiment-row')}`, (trs) =>
    trs.map((tr) => ({
      id: tr.dataset.experimentId,
      name: tr.querySelector('[data-testid="experiment-name"]')?.textContent.trim(),
      count: tr.querySelector('[data-testid="experiment-run-count"]')?.textContent.trim(),
    })));
}

test('experiments list shows each logged experiment with its run count', async () => {
  await page.goto('/');
  await page.waitForSelector(tid('experiment-row'));
  const shown = await rows();
  for (const [name, exp] of Object.entries(fixture.experiments)) {
    const row = shown.find((r) => r.name === name);
    assert.ok(row, `experiment ${name} listed (got ${shown.map((r) => r.name)})`);
    assert.equal(row.id, exp.id, `${name} id`);
    assert.equal(num(row.count), exp.run_count, `${name} run count`);
  }
  await screenshot(page, 'experiments');
});

test('search narrows the experiments list', async () => {
  await page.goto('/');
  await page.waitForSelector(tid('experiment-row'));
  await page.fill(tid('experiments-search'), 'vision');
  const shown = await eventually(async () => {
    const r = await rows();
    return r.length === 1 && r;
  }, 3000, 'one experiment left after searching "vision"');
  assert.equal(shown[0].name, 'e2e-vision');
  assert.equal(num(shown[0].count), fixture.experiments['e2e-vision'].run_count);
  await page.fill(tid('experiments-search'), 'e2e-');
  await eventually(async () => (await rows()).length === 3, 3000, 'three e2e- experiments');
  await page.fill(tid('experiments-search'), 'no-such-experiment-xyz');
  await eventually(async () => (await rows()).length === 0, 3000, 'no experiment for a name that matches none');
});

test('theme toggle switches dark and light and is remembered', async () => {
  await page.goto('/');
  await page.waitForSelector(tid('experiment-row'));
  const theme = () => page.evaluate(() => document.documentElement.dataset.theme);
  const first = await theme();
  assert.ok(['light', 'dark'].includes(first), `theme is light or dark, got ${first}`);
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor + " / " + getComputedStyle(document.documentElement).backgroundColor);
  const firstBg = await bg();
  await page.click(tid('theme-toggle'));
  const second = await theme();
  assert.equal(second, first === 'light' ? 'dark' : 'light');
  assert.notEqual(await bg(), firstBg, 'the page background changes with the theme');
  if (second === 'dark') await screenshot(page, 'experiments-dark');
  await page.reload();
  await page.waitForSelector(tid('experiment-row'));
  assert.equal(await theme(), second, 'theme remembered across reloads');
  await page.goto('/?theme=dark');
  await page.waitForSelector(tid('experiment-row'));
  assert.equal(await theme(), 'dark', '?theme=dark');
  await screenshot(page, 'experiments-dark');
  await page.goto('/?theme=light');
  await page.waitForSelector(tid('experiment-row'));
  assert.equal(await theme(), 'light', '?theme=light');
});
