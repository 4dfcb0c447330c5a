// Charts on uPlot: scalar series downsampled by the server (buckets ≈ pixel width, min/max kept), zoom that
// refetches finer detail for the visible step range, live appends, x = step / wall time / relative time, log
// scale, smoothing, hover values; plus plain XY charts for lists, rows and tables.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { readScalars, Scalars } from "./api";
import { fmtDuration, fmtValue, h } from "./util";

export type XMode = "step" | "time" | "relative";

/** View-wide chart settings (kept in the URL by the views). */
export interface ChartSettings {
  x: XMode;
  log: boolean;
  smoothing: number; // 0 … 0.99, TensorBoard-style EMA
}

export const PALETTE = [
  "#3d6df2", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#e03131", "#5c940d",
  "#1971c2", "#c2255c", "#6741d9", "#087f5b", "#d9480f", "#364fc7", "#a61e4d", "#74b816",
];

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Calls `done` once every registered chart has drawn its first data (the charts-drawn performance mark). */
export class DrawTracker {
  private pending = new Set<object>();
  private armed = false;
  constructor(private done: () => void) {}
  add(c: object): void {
    this.pending.add(c);
  }
  drawn(c: object): void {
    this.pending.delete(c);
    this.check();
  }
  /** Called after the view created all its charts; an empty view is done at once. */
  arm(): void {
    this.armed = true;
    this.check();
  }
  private check(): void {
    if (this.armed && this.pending.size === 0) this.done();
  }
}

interface Cols {
  steps: number[];
  times: number[];
  values: number[];
}

function toCols(s: Scalars): Cols {
  return { steps: Array.from(s.steps), times: Array.from(s.times), values: Array.from(s.values) };
}

function smooth(values: (number | null)[], w: number): (number | null)[] {
  if (w <= 0) return values;
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !isFinite(v)) return v;
    last = last * w + (1 - w) * v;
    n++;
    return last / (1 - Math.pow(w, n));
  });
}

/** Tick increments for integer axes (steps, list indices): never a fractional tick. */
const INT_INCRS = (() => {
  const out: number[] = [];
  for (let m = 1; m <= 1e15; m *= 10) out.push(m, 2 * m, 5 * m);
  return out;
})();

function baseOpts(width: number, height: number, x: XMode, log: boolean, series: uPlot.Series[], integerX = x === "step"): uPlot.Options {
  const axisStroke = () => cssVar("--muted");
  const grid = { stroke: () => cssVar("--border"), width: 1 };
  const xValues =
    x === "relative"
      ? (_u: uPlot, vals: number[]) => vals.map((v) => fmtDuration(v * 1e6))
      : x === "step"
        ? (_u: uPlot, vals: number[]) => vals.map((v) => (Math.abs(v) >= 1e4 ? `${+(v / 1000).toPrecision(3)}k` : String(v)))
        : undefined;
  return {
    width,
    height,
    pxAlign: 0,
    cursor: { drag: { x: true, y: false, setScale: true }, focus: { prox: 16 } },
    focus: { alpha: 0.35 },
    legend: { show: true, live: true },
    scales: {
      x: { time: x === "time" },
      y: log ? { distr: 3 } : {},
    },
    axes: [
      {
        stroke: axisStroke,
        grid,
        ticks: { stroke: () => cssVar("--border"), width: 1 },
        ...(xValues ? { values: xValues } : {}),
        ...(integerX ? { incrs: INT_INCRS } : {}),
        // Wall-time ticks take two lines (time, then the date where it changes).
        size: x === "time" ? 52 : 34,
      },
      {
        stroke: axisStroke,
        grid,
        ticks: { stroke: () => cssVar("--border"), width: 1 },
        values: (_u: uPlot, vals: number[]) => vals.map((v) => fmtValue(v)),
        size: 56,
      },
    ],
    series: [
      {
        label: x === "step" ? "step" : x === "time" ? "time" : "elapsed",
        value: x === "relative" ? (_u, v) => (v === null ? "—" : fmtDuration(v * 1e6)) : undefined,
      },
      ...series,
    ],
  };
}

function lineSeries(label: string, color: string): uPlot.Series {
  return {
    label,
    stroke: color,
    width: 1.5,
    spanGaps: true,
    points: { show: false },
    value: (_u, v) => (v === null || v === undefined ? "—" : fmtValue(v)),
  };
}

/** A chart card's shell: title row (name, kind, latest value), a box for the plot. */
export function chartCard(
  testid: string,
  metric: string,
  kind: string,
  extra?: Node,
): { card: HTMLElement; box: HTMLElement; latest: HTMLElement; title: HTMLElement } {
  const latest = h("span.latest", { "data-testid": "metric-latest", "data-metric": metric });
  const title = h("div.chart-title", null, h("span.name", { title: metric }, metric), kind !== "scalar" ? h("span.kind", null, kind) : null, latest);
  const box = h("div.chart-box");
  const card = h(
    "div.chart-card",
    { "data-testid": testid, "data-metric": metric, "data-series": 0, "data-points": 0, "data-drawn": "false" },
    title,
    extra ?? null,
    box,
  );
  return { card, box, latest, title };
}

/** One scalar series source: a metric of a run. */
export interface ScalarSource {
  runId: string;
  metric: string;
  label: string;
  color: string;
  /** µs origin of relative time (the run's start); defaults to the first point's time. */
  origin?: number;
}

/**
 * A line chart of one metric over one or more runs. Data comes from the server already downsampled to about
 * the plot's pixel width; a drag-zoom fetches the visible step range again at full resolution for that width.
 */
export class ScalarChart {
  readonly card: HTMLElement;
  private box: HTMLElement;
  private latestEl: HTMLElement;
  private u?: uPlot;
  private full: Cols[];
  private detail: (Cols | null)[];
  private zoom: { minStep: number; maxStep: number } | null = null;
  private firstDrawn = false;
  private raf = 0;
  private detailTimer = 0;
  private abort = new AbortController();
  private ignoreScale = false;
  private ro: ResizeObserver;
  private loaded = false;

  constructor(
    private sources: ScalarSource[],
    private settings: ChartSettings,
    private tracker: DrawTracker | null,
    testid = "metric-chart",
    private onZoomStep?: (minStep: number, maxStep: number) => void,
  ) {
    const metric = sources[0]?.metric ?? "";
    const parts = chartCard(testid, metric, "scalar");
    this.card = parts.card;
    this.box = parts.box;
    this.latestEl = parts.latest;
    this.full = sources.map(() => ({ steps: [], times: [], values: [] }));
    this.detail = sources.map(() => null);
    tracker?.add(this);
    // Test hook (docs/portal.md): `card.plotted` is the data as drawn, [xs, ...ys per source].
    Object.defineProperty(this.card, "plotted", { get: () => this.u?.data });
    this.box.append(h("div.hint", null, "loading…"));
    this.ro = new ResizeObserver(() => {
      if (this.u && this.box.clientWidth > 0 && Math.abs(this.u.width - this.box.clientWidth) > 2) {
        this.u.setSize({ width: this.box.clientWidth, height: this.box.clientHeight || 240 });
      }
    });
    this.ro.observe(this.box);
    window.addEventListener("flightlog-theme", this.onTheme);
  }

  private onTheme = () => this.u?.redraw(false, true);

  private buckets(): number {
    return Math.max(64, Math.min(2000, Math.round(this.box.clientWidth || 600)));
  }

  /** First load: every source fetched in parallel, downsampled. */
  async load(): Promise<void> {
    // Let the caller put the card in the page first, so the bucket count is the plot's real width.
    await Promise.resolve();
    const b = this.buckets();
    const results = await Promise.allSettled(
      this.sources.map((s) => readScalars(s.runId, s.metric, { buckets: b }, this.abort.signal)),
    );
    if (this.abort.signal.aborted) return;
    results.forEach((r, i) => {
      if (r.status === "fulfilled") {
        const c = toCols(r.value);
        // Live points that arrived while loading are newer than what was read: keep them after it.
        const pending = this.full[i];
        const last = c.steps.length ? c.steps[c.steps.length - 1] : -Infinity;
        for (let k = 0; k < pending.steps.length; k++) {
          if (pending.steps[k] > last) {
            c.steps.push(pending.steps[k]);
            c.times.push(pending.times[k]);
            c.values.push(pending.values[k]);
          }
        }
        this.full[i] = c;
      }
    });
    this.loaded = true;
    this.redraw(true);
  }

  /** New points from the live stream. */
  append(runId: string, steps: number[], times: number[], values: number[]): void {
    this.sources.forEach((s, i) => {
      if (s.runId !== runId) return;
      if (values.length) this.latestValue = values[values.length - 1];
      const f = this.full[i];
      for (let k = 0; k < steps.length; k++) {
        f.steps.push(steps[k]);
        f.times.push(times[k]);
        f.values.push(values[k]);
      }
    });
    if (!this.loaded) return;
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame(() => this.redraw(this.zoom === null));
  }

  setSettings(s: ChartSettings): void {
    const rebuild = s.x !== this.settings.x || s.log !== this.settings.log;
    this.settings = s;
    if (rebuild) {
      this.zoom = null;
      this.detail = this.detail.map(() => null);
      this.u?.destroy();
      this.u = undefined;
    }
    this.redraw(true);
  }

  /** The series as shown: full data outside a zoomed step range, the finer detail inside it. */
  private view(i: number): Cols {
    const f = this.full[i];
    const d = this.detail[i];
    if (!d || !this.zoom) return f;
    const out: Cols = { steps: [], times: [], values: [] };
    const push = (c: Cols, k: number) => {
      out.steps.push(c.steps[k]);
      out.times.push(c.times[k]);
      out.values.push(c.values[k]);
    };
    for (let k = 0; k < f.steps.length && f.steps[k] < this.zoom.minStep; k++) push(f, k);
    for (let k = 0; k < d.steps.length; k++) push(d, k);
    for (let k = 0; k < f.steps.length; k++) if (f.steps[k] > this.zoom.maxStep) push(f, k);
    return out;
  }

  private xOf(c: Cols, i: number): number[] {
    const { x } = this.settings;
    if (x === "step") return c.steps;
    if (x === "time") return c.times.map((t) => t / 1e6);
    const origin = this.sources[i].origin ?? (c.times.length ? c.times[0] : 0);
    return c.times.map((t) => (t - origin) / 1e6);
  }

  private data(): { data: uPlot.AlignedData; points: number } {
    const tables: uPlot.AlignedData[] = [];
    let points = 0;
    this.sources.forEach((_, i) => {
      const c = this.view(i);
      points += c.values.length;
      let xs = this.xOf(c, i);
      let ys: (number | null)[] = c.values.map((v) => (isFinite(v) && (!this.settings.log || v > 0) ? v : null));
      ys = smooth(ys, this.settings.smoothing);
      if (this.settings.x !== "step") {
        // Wall times may repeat or go back (resumed runs): uPlot needs ascending x.
        const order = xs.map((_, k) => k).sort((a, b) => xs[a] - xs[b] || a - b);
        if (order.some((v, k) => v !== k)) {
          xs = order.map((k) => xs[k]);
          ys = order.map((k) => ys[k]);
        }
      }
      tables.push([xs, ys] as unknown as uPlot.AlignedData);
    });
    if (tables.length === 1) return { data: tables[0], points };
    return { data: uPlot.join(tables), points };
  }

  private latestValue: number | undefined;

  /** The series' true latest value (downsampled data may end on a bucket's min or max instead). */
  setLatest(v: number): void {
    this.latestValue = v;
  }

  private latest(): string {
    if (this.sources.length !== 1) return "";
    if (this.latestValue !== undefined) return fmtValue(this.latestValue);
    const f = this.full[0];
    return f.values.length ? fmtValue(f.values[f.values.length - 1]) : "";
  }

  redraw(resetScales: boolean): void {
    if (!this.card.isConnected && this.u) return;
    const { data, points } = this.data();
    this.card.dataset.series = String(this.sources.length);
    this.card.dataset.points = String(points);
    this.latestEl.textContent = this.latest();
    if (!this.u) {
      this.box.replaceChildren();
      const series = this.sources.map((s) => lineSeries(s.label, s.color));
      const opts = baseOpts(this.box.clientWidth || 600, 240 - 30, this.settings.x, this.settings.log, series);
      opts.hooks = {
        draw: [() => this.onDraw()],
        setScale: [(u, key) => key === "x" && this.onScale(u)],
      };
      this.u = new uPlot(opts, data, this.box);
      this.u.over.addEventListener("dblclick", () => this.resetZoom());
      return;
    }
    if (resetScales) {
      this.u.setData(data, true);
    } else {
      const { min, max } = this.u.scales.x;
      this.ignoreScale = true;
      this.u.setData(data, false);
      if (min !== undefined && max !== undefined) this.u.setScale("x", { min, max });
      this.ignoreScale = false;
    }
  }

  private onDraw(): void {
    if (this.u) {
      this.card.dataset.x = this.settings.x;
      this.card.dataset.yScale = this.u.scales.y.distr === 3 ? "log" : "linear";
    }
    if (!this.loaded || this.firstDrawn) return;
    this.firstDrawn = true;
    this.card.dataset.drawn = "true";
    this.tracker?.drawn(this);
  }

  private onScale(u: uPlot): void {
    if (this.ignoreScale || !this.loaded) return;
    const { min, max } = u.scales.x;
    if (min === undefined || max === undefined) return;
    clearTimeout(this.detailTimer);
    this.detailTimer = window.setTimeout(() => this.fetchDetail(min, max), 120);
  }

  /** Maps the visible x range to steps and reads that range again at the plot's resolution. */
  private async fetchDetail(min: number, max: number): Promise<void> {
    let lo = Infinity;
    let hi = -Infinity;
    let fullLo = Infinity;
    let fullHi = -Infinity;
    this.sources.forEach((_, i) => {
      const c = this.full[i];
      const xs = this.xOf(c, i);
      for (let k = 0; k < xs.length; k++) {
        fullLo = Math.min(fullLo, c.steps[k]);
        fullHi = Math.max(fullHi, c.steps[k]);
        if (xs[k] >= min && xs[k] <= max) {
          lo = Math.min(lo, c.steps[k]);
          hi = Math.max(hi, c.steps[k]);
        }
      }
    });
    if (this.settings.x === "step") {
      lo = Math.floor(min);
      hi = Math.ceil(max);
    }
    if (!isFinite(lo) || !isFinite(hi)) return;
    if (lo <= fullLo && hi >= fullHi) {
      if (this.zoom) this.resetZoom();
      return;
    }
    const zoom = { minStep: lo, maxStep: hi };
    const b = this.buckets();
    const got = await Promise.allSettled(
      this.sources.map((s) => readScalars(s.runId, s.metric, { buckets: b, minStep: lo, maxStep: hi }, this.abort.signal)),
    );
    if (this.abort.signal.aborted) return;
    this.zoom = zoom;
    this.detail = got.map((r) => (r.status === "fulfilled" ? toCols(r.value) : null));
    this.redraw(false);
    this.onZoomStep?.(lo, hi);
  }

  private resetZoom(): void {
    this.zoom = null;
    this.detail = this.detail.map(() => null);
    this.redraw(true);
  }

  destroy(): void {
    this.abort.abort();
    cancelAnimationFrame(this.raf);
    clearTimeout(this.detailTimer);
    this.ro.disconnect();
    window.removeEventListener("flightlog-theme", this.onTheme);
    this.u?.destroy();
  }
}

/** A plain XY line chart (lists, rows, tables): x values and one or more y columns, no server fetch. */
export class XYChart {
  private u?: uPlot;
  private ro: ResizeObserver;
  constructor(
    private box: HTMLElement,
    private card: HTMLElement,
    tracker: DrawTracker | null,
  ) {
    tracker?.add(this);
    this.tracker = tracker;
    window.addEventListener("flightlog-theme", this.onTheme);
    this.ro = new ResizeObserver(() => {
      if (this.u && box.clientWidth > 0 && Math.abs(this.u.width - box.clientWidth) > 2) {
        this.u.setSize({ width: box.clientWidth, height: 210 });
      }
    });
    this.ro.observe(box);
  }
  private tracker: DrawTracker | null;
  private drawnOnce = false;

  set(xLabel: string, xs: number[], ys: { label: string; values: (number | null)[] }[], integerX = false): void {
    const order = xs.map((_, k) => k).sort((a, b) => xs[a] - xs[b] || a - b);
    const data = [order.map((k) => xs[k]), ...ys.map((y) => order.map((k) => y.values[k]))] as unknown as uPlot.AlignedData;
    let points = 0;
    for (const y of ys) points += y.values.filter((v) => v !== null && isFinite(v)).length;
    this.card.dataset.series = String(ys.length);
    this.card.dataset.points = String(points);
    this.u?.destroy();
    this.box.replaceChildren();
    const series = ys.map((y, i) => ({ ...lineSeries(y.label, PALETTE[i % PALETTE.length]), points: { show: xs.length <= 60, size: 5 } }));
    const opts = baseOpts(this.box.clientWidth || 500, 210, "step", false, series, integerX);
    opts.series[0].label = xLabel;
    opts.cursor = { drag: { x: true, y: false, setScale: true } };
    opts.hooks = {
      draw: [
        () => {
          if (this.drawnOnce) return;
          this.drawnOnce = true;
          this.card.dataset.drawn = "true";
          this.tracker?.drawn(this);
        },
      ],
    };
    this.u = new uPlot(opts, data, this.box);
  }

  private onTheme = () => this.u?.redraw(false, true);

  destroy(): void {
    this.ro.disconnect();
    window.removeEventListener("flightlog-theme", this.onTheme);
    this.u?.destroy();
  }
}
