// Portal benchmark: starts the real `flightlog server` (release build) on a free loopback port with a temp data
// dir, fills one run with 20 scalar metrics × 1,000,000 points through the native batch API (big batches) and an
// experiment with 10,000 runs, then measures in headless Chromium the time from navigation start to
// performance.mark('flightlog:charts-drawn') (run view, metrics tab) and 'flightlog:runs-table-ready' (runs
// table), median of several cold loads, plus the portal's gzipped asset size (gzip -9 of every web/dist file).
//
// Usage: node bench.mjs [--bin target/release/flightlog] [--points 1000000] [--metrics 20] [--runs 10000] [--loads 5]
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, readFileSync, statSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const { values: opt } = parseArgs({
  options: {
    bin: { type: 'string', default: join(ROOT, 'target/release/flightlog') },
    points: { type: 'string', default: '1000000' },
    metrics: { type: 'string', default: '20' },
    runs: { type: 'string', default: '10000' },
    loads: { type: 'string', default: '5' },
  },
});
const POINTS = Number(opt.points);
const METRICS = Number(opt.metrics);
const RUNS = Number(opt.runs);
const LOADS = Number(opt.loads);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const freePort = () => new Promise((ok, fail) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  s.on('error', fail);
});

async function startServer() {
  const data = mkdtempSync(join(tmpdir(), 'flightlog-portal-bench-'));
  const port = await freePort();
  const child = spawn(opt.bin, ['server', '--host', '127.0.0.1', '--port', String(port), '--data', join(data, 'data')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch { /* not up yet */ }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('flightlog server did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, child, data };
}

async function call(url, method, path, body) {
  const res = await fetch(url + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** One run, METRICS scalar series of POINTS points each, sent as batches of ~1M points (all series per batch). */
async function fillBigRun(url) {
  const exp = await call(url, 'POST', '/api/v1/experiments', { name: 'bench-big-run' });
  const run = await call(url, 'POST', '/api/v1/runs', { experiment_id: exp.id, display_name: 'big' });
  const per = Math.max(1, Math.floor(500_000 / METRICS)); // points per series per batch: ~500k points per request
  const t0 = performance.now();
  let seed = 0x9e3779b9; // xorshift32: cheap noise that does not repeat within the series
  const rand = () => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };
  const level = new Array(METRICS).fill(0).map((_, m) => 1 + m / 10);
  let inFlight = [];
  for (let start = 0; start < POINTS; start += per) {
    const n = Math.min(per, POINTS - start);
    const steps = Array.from({ length: n }, (_, i) => start + i);
    const scalars = level.map((_, m) => ({
      name: `metric_${String(m).padStart(2, '0')}`,
      steps,
      // A noisy decaying curve with a spike now and then (what min/max downsampling must keep).
      values: steps.map((s) => {
        level[m] *= 0.999999;
        const spike = s % 99_991 === 7 * m ? 5 : 0; // ~10 one-point spikes per series
        return Math.round((level[m] + 0.05 * rand() + spike) * 1e5) / 1e5;
      }),
    }));
    const body = JSON.stringify({ batch_id: `big-${start}`, scalars });
    inFlight.push(call(url, 'POST', `/api/v1/runs/${run.id}/batch`, body));
    if (inFlight.length >= 2) { await inFlight.shift(); }
  }
  await Promise.all(inFlight);
  await call(url, 'PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
  const s = (performance.now() - t0) / 1000;
  console.log(`filled run: ${METRICS} metrics × ${POINTS.toLocaleString('en')} points in ${s.toFixed(1)} s ` +
    `(${Math.round((METRICS * POINTS) / s).toLocaleString('en')} points/s)`);
  return run.id;
}

/** An experiment of RUNS runs, each with 3 params and 3 metrics of 10 points, created 16 requests at a time. */
async function fillManyRuns(url) {
  const exp = await call(url, 'POST', '/api/v1/experiments', { name: 'bench-10k-runs' });
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < RUNS) {
      const i = next++;
      const run = await call(url, 'POST', '/api/v1/runs', {
        experiment_id: exp.id,
        display_name: `run-${i}`,
        params: { lr: String([0.1, 0.01, 0.001][i % 3]), batch_size: String(16 << (i % 4)), seed: String(i) },
      });
      const steps = Array.from({ length: 10 }, (_, k) => k);
      await call(url, 'POST', `/api/v1/runs/${run.id}/batch`, {
        scalars: ['loss', 'acc', 'val_loss'].map((name, m) => ({
          name, steps, values: steps.map((k) => Math.round((1 / (k + 1 + (i % 97)) + m) * 1e4) / 1e4),
        })),
      });
      await call(url, 'PATCH', `/api/v1/runs/${run.id}`, { status: 'Completed' });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  console.log(`filled experiment: ${RUNS.toLocaleString('en')} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return exp.id;
}

/** ms from navigation start to `mark`, over LOADS cold loads (a new browser context each: no cache). */
async function timeMark(browser, url, mark, flag, check) {
  const times = [], apiDone = [];
  let requests = 0;
  for (let i = 0; i < LOADS; i++) {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    await page.goto(url, { waitUntil: 'commit' });
    await page.waitForFunction((f) => window.__flightlog?.[f] === true, flag, { timeout: 60_000 });
    const t = await page.evaluate((m) => {
      const at = performance.getEntriesByName(m)[0]?.startTime ?? NaN;
      const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/') && e.responseEnd <= at);
      return { at, requests: api.length, apiDone: Math.max(0, ...api.map((e) => e.responseEnd)) };
    }, mark);
    times.push(t.at);
    apiDone.push(t.apiDone);
    requests = t.requests;
    if (i === 0 && check) await check(page);
    await context.close();
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return { median: median(times), all: times, apiDone: median(apiDone), requests };
}

function assetSize() {
  const dist = join(ROOT, 'web/dist');
  let raw = 0, gz = 0, files = 0;
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) { walk(p); continue; }
      if (/\.(gz|br)$/.test(name)) continue; // precompressed copies of the files counted here
      const bytes = readFileSync(p);
      raw += bytes.length;
      gz += gzipSync(bytes, { level: 9 }).length;
      files++;
    }
  };
  walk(dist);
  return { raw, gz, files };
}

const server = await startServer();
let browser;
try {
  const runId = await fillBigRun(server.url);
  const expId = await fillManyRuns(server.url);
  browser = await chromium.launch({ executablePath: CHROMIUM });
  const shots = join(HERE, 'screenshots');
  mkdirSync(shots, { recursive: true });

  const charts = await timeMark(browser, `${server.url}/runs/${runId}?tab=metrics`, 'flightlog:charts-drawn', 'chartsDrawn',
    async (page) => {
      const n = await page.$$eval('[data-testid="metric-chart"][data-drawn="true"]', (els) => els.length);
      if (n !== METRICS) throw new Error(`run view drew ${n} charts, expected ${METRICS}`);
      await page.screenshot({ path: join(shots, 'bench-run-metrics.png') });
    });
  const table = await timeMark(browser, `${server.url}/experiments/${expId}`, 'flightlog:runs-table-ready', 'runsTableReady',
    async (page) => {
      const total = await page.$eval('[data-testid="runs-table"]', (t) => Number(t.dataset.totalRuns));
      if (total !== RUNS) throw new Error(`runs table data-total-runs=${total}, expected ${RUNS}`);
      await page.screenshot({ path: join(shots, 'bench-runs-table.png') });
    });
  const scroll = await scrollFps(browser, `${server.url}/experiments/${expId}`);
  const size = assetSize();

  const fmt = (r) => `${r.median.toFixed(0).padStart(6)} ms  (loads: ${r.all.map((t) => t.toFixed(0)).join(', ')}; ` +
    `last of ${r.requests} API responses at ${r.apiDone.toFixed(0)} ms)`;
  console.log(`run view, ${METRICS} × ${POINTS.toLocaleString('en')} points, charts drawn: ${fmt(charts)}   (target ≤ 1000 ms)`);
  console.log(`runs table, ${RUNS.toLocaleString('en')} runs, ready:            ${fmt(table)}   (target ≤ 1000 ms)`);
  console.log(`runs table scrolled to the bottom:    ${scroll.fps.toFixed(0).padStart(6)} frames/s (100 rows a frame, slowest frame ${scroll.worst.toFixed(0)} ms, ${scroll.ms.toFixed(0)} ms in all; last row: ${scroll.last})`);
  console.log(`portal assets, gzip -9:               ${(size.gz / 1000).toFixed(1).padStart(6)} kB  (${size.files} files, ${(size.raw / 1000).toFixed(1)} kB raw; target ≤ 500 kB)`);
} finally {
  await browser?.close();
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  rmSync(server.data, { recursive: true, force: true });
}

/** Scrolls the runs table's scroll container from top to bottom in wheel steps, counting animation frames. */
async function scrollFps(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => window.__flightlog?.runsTableReady === true, null, { timeout: 60_000 });
  const result = await page.evaluate(async () => {
    const table = document.querySelector('[data-testid="runs-table"]');
    const scrollable = (e) => e.scrollHeight > e.clientHeight + 10 && /(auto|scroll)/.test(getComputedStyle(e).overflowY);
    let el = [table, ...table.querySelectorAll('*')].find(scrollable);
    if (!el) { el = table.parentElement; while (el && !scrollable(el)) el = el.parentElement; }
    el = el || document.scrollingElement;
    let frames = 0, worst = 0, prev = performance.now();
    const t0 = prev;
    await new Promise((done) => {
      const tick = (now) => {
        frames++;
        worst = Math.max(worst, now - prev);
        prev = now;
        el.scrollTop += 3400; // 100 rows of 34 px per frame
        if (el.scrollTop + el.clientHeight >= el.scrollHeight - 2 || now - t0 > 20_000) done();
        else requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    const ms = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 200));
    const rows = [...document.querySelectorAll('[data-testid="run-row"]')];
    const last = rows.at(-1)?.querySelector('[data-column="name"]')?.textContent?.trim() ?? 'none';
    return { fps: (frames * 1000) / ms, ms, worst, last };
  });
  await context.close();
  return result;
}
