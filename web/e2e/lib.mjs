// Shared pieces of the portal's end-to-end tests: the server under test (FLIGHTLOG_URL), what fill.py logged
// (FLIGHTLOG_E2E_FIXTURE), headless Chromium from the system (playwright-core never downloads a browser), small
// native-API helpers for logging while a page is open, and screenshots saved to web/e2e/screenshots/.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

export const URL_BASE = process.env.FLIGHTLOG_URL;
if (!URL_BASE) throw new Error('FLIGHTLOG_URL is not set: run the tests through scripts/portal-tests');
export const fixture = JSON.parse(readFileSync(process.env.FLIGHTLOG_E2E_FIXTURE, 'utf8'));
const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');

/** Chromium and one page (1280×800) whose console errors are collected in `page.errors`. */
export async function openBrowser() {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, baseURL: URL_BASE });
  const page = await newPage(context);
  return { browser, context, page };
}

/** Another page of `context` (a page of its own: its routes, init scripts), uncaught errors in `page.errors`. */
export async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  return page;
}

/** Opens `path` and waits until every chart of the view has drawn (the charts-drawn mark, docs/portal.md). */
export async function gotoDrawn(page, path) {
  await page.goto(path);
  await page.waitForFunction(() => window.__flightlog?.chartsDrawn === true);
}

/** What the chart `sel` draws: [xs, ...ys] as plain arrays (nulls where a value cannot be drawn). */
export function plotted(page, sel) {
  return page.$eval(sel, (e) => e.plotted && e.plotted.map((a) => Array.from(a)));
}

/** A drag-zoom across the chart `sel`, from `from` to `to` (fractions of the plot's width), at mid height. */
export async function dragX(page, sel, from, to) {
  const box = await page.locator(`${sel} .u-over`).boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * from, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * (from + to) / 2, y, { steps: 5 });
  await page.mouse.move(box.x + box.width * to, y, { steps: 5 });
  await page.mouse.up();
}

/** The runs table of a run's experiment (a run as newRun returns it). */
export async function openExperiment(page, run) {
  await page.goto(`/experiments/${run.experiment_id}`);
}

/** The runs-table cell of a run's latest `name` value. */
export function metricCell(page, runId, name) {
  return page.locator(`${tid('run-row', { 'run-id': runId })} [data-testid="run-cell"][data-column="metric:${name}"]`);
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** A locator for `[data-testid=id]` plus extra attribute selectors, e.g. tid('metric-chart', {metric: 'loss'}). */
export function tid(id, data = {}) {
  return `[data-testid="${id}"]` + Object.entries(data).map(([k, v]) => `[data-${k}="${v}"]`).join('');
}

/** Waits until `fn()` (async) returns a truthy value, polling; fails with the last value after `ms`. */
export async function eventually(fn, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`${what} not met within ${ms} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The number shown in a cell, tolerant of formatting (thousands separators, trailing units). */
export function num(text) {
  const m = String(text).replace(/,/g, '').match(/-?\d+(\.\d+)?(e-?\d+)?/i);
  return m ? Number(m[0]) : NaN;
}

export function assertClose(actual, expected, what, tol = 1e-3) {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} != ${expected}`);
}

// --- the native API, for logging while a page is open (what the SDK's sender does, without its 100 ms batching)
export async function api(method, path, body, contentType = 'application/json') {
  const res = await fetch(URL_BASE + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : contentType === 'application/json' ? JSON.stringify(body) : body,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export async function newRun(experimentName, displayName, params = {}) {
  const exp = await api('GET', `/api/v1/experiments/by-name/${encodeURIComponent(experimentName)}`).catch(() =>
    api('POST', '/api/v1/experiments', { name: experimentName }));
  return api('POST', '/api/v1/runs', { experiment_id: exp.id, display_name: displayName, params });
}

/** Marks runs Completed (a test's runs stop looking live in the views that follow). */
export async function complete(...runs) {
  for (const r of runs) await api('PATCH', `/api/v1/runs/${r.id}`, { status: 'Completed' });
}

export function logScalars(runId, name, steps, values) {
  const now = Date.now() * 1000;
  return api('POST', `/api/v1/runs/${runId}/batch`, {
    scalars: [{ name, steps, times: steps.map((_, i) => now + i), values }],
  });
}

/** A solid-colour RGB PNG, so each logged image is told apart by a pixel's colour. */
export function pngBytes(width, height, rgb) {
  const chunk = (kind, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(kind), data])));
    return Buffer.concat([len, Buffer.from(kind), data, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const row = Buffer.concat([Buffer.from([0]), ...Array(width).fill(Buffer.from(rgb))]);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(Array(height).fill(row)))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

export function logImage(runId, name, step, bytes) {
  return api('POST', `/api/v1/runs/${runId}/images?name=${encodeURIComponent(name)}&step=${step}`, bytes, 'image/png');
}

/** "r,g,b" of pixel (5, 5) of a loaded <img> (empty until it has loaded). */
export function imageColor(img) {
  return img.evaluate((e) => {
    if (!e.complete || !e.naturalWidth) return '';
    const c = document.createElement('canvas');
    c.width = e.naturalWidth;
    c.height = e.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(e, 0, 0);
    return [...g.getImageData(5, 5, 1, 1).data.slice(0, 3)].join(',');
  });
}
