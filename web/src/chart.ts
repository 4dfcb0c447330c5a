// Charts on uPlot: scalar series downsampled by the server (buckets ≈ pixel width, min/max kept), zoom that
// refetches finer detail for the visible step range, live appends, x = step / wall time / relative time, log
// scale, smoothing, hover values; plus plain XY charts for lists, rows and tables.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { readScalars, Scalars } from "./api";
import { errorBox, fmtDuration, fmtValue, h, throttle } from "./util";

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

/** What the tooltip shows for a point: the drawn value, or the logged NaN/±Infinity where nothing is drawn. */
function lineSeries(label: string, color: string, raw?: (sidx: number, idx: number) => number | undefined): uPlot.Series {
  return {
    label,
    stroke: color,
    width: 1.5,
    // Gaps made by NaN/±Inf (nulls) stay gaps: bridging them hid an Inf spike in a flat line. The points missing
    // where another run has no point at that x (undefined after uPlot.join) are still bridged.
    spanGaps: false,
    points: { show: false },
    value: (_u, v, sidx, idx) => {
      if (v !== null && v !== undefined) return fmtValue(v);
      const r = raw && idx !== null && idx !== undefined ? raw(sidx, idx) : undefined;
      return r !== undefined && !isFinite(r) ? nonFiniteName(r) : "—";
    },
  };
}

function nonFiniteName(v: number): string {
  return isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
}

/** Plot height of a chart card; the legend goes below it in the page flow (the card grows with it). */
const PLOT_H = 210;

/** A chart card's shell: title row (name, kind, non-finite badge, latest value), a box for the plot. */
export function chartCard(
  testid: string,
  metric: string,
  kind: string,
  extra?: Node,
): { card: HTMLElement; box: HTMLElement; latest: HTMLElement; title: HTMLElement; badge: HTMLElement } {
  const latest = h("span.latest", { "data-testid": "metric-latest", "data-metric": metric });
  const badge = h("span.nonfinite", { "data-testid": "metric-nonfinite", "data-metric": metric, hidden: true });
  const title = h(
    "div.chart-title",
    null,
    h("span.name", { title: metric }, metric),
    kind !== "scalar" ? h("span.kind", null, kind) : null,
    badge,
    latest,
  );
  const box = h("div.chart-box");
  const card = h(
    "div.chart-card",
    { "data-testid": testid, "data-metric": metric, "data-series": 0, "data-points": 0, "data-drawn": "false" },
    title,
    extra ?? null,
    box,
  );
  return { card, box, latest, title, badge };
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

interface Pending extends Cols {
  index: number[];
}

/** Whether xs is ascending (ties allowed): uPlot needs that, and most series already are. */
function ascending(xs: number[]): boolean {
  for (let k = 1; k < xs.length; k++) if (xs[k] < xs[k - 1]) return false;
  return true;
}

/**
 * A line chart of one metric over one or more runs. Data comes from the server already downsampled to about
 * the plot's pixel width; a drag-zoom fetches the visible step range again at full resolution for that width.
 * Live points are kept by series index: each source knows how many of its series' points it holds (`have`: the
 * series' length at the read, which the server sends with it, plus the live points appended since), so a point
 * is never drawn twice, and a live batch that starts past `have` (points missed) re-reads the series.
 */
export class ScalarChart {
  readonly card: HTMLElement;
  private box: HTMLElement;
  private latestEl: HTMLElement;
  private badge: HTMLElement;
  private u?: uPlot;
  private full: Cols[];
  private detail: (Cols | null)[];
  /** Per source: series points [0, have) are in `full` (downsampled or whole). */
  private have: number[];
  /** Per source: live points that arrived while a read was on its way (merged by index when it lands). */
  private pending: Pending[];
  /** Reads of the whole series on their way. */
  private reading = 0;
  private zoom: { minStep: number; maxStep: number } | null = null;
  private firstDrawn = false;
  private raf = 0;
  private detailTimer = 0;
  private abort = new AbortController();
  private ignoreScale = false;
  private ro: ResizeObserver;
  private loaded = false;
  private loading: Promise<void> | null = null;
  private loadSeq = 0;
  private raw: (number | undefined)[][] = [];

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
    this.badge = parts.badge;
    this.full = sources.map(() => ({ steps: [], times: [], values: [] }));
    this.detail = sources.map(() => null);
    this.have = sources.map(() => 0);
    this.pending = sources.map(() => ({ index: [], steps: [], times: [], values: [] }));
    // Test hook (docs/portal.md): `card.plotted` is the data as drawn, [xs, ...ys per source].
    Object.defineProperty(this.card, "plotted", { get: () => this.u?.data });
    this.box.append(h("div.hint", null, "loading…"));
    this.ro = new ResizeObserver(() => {
      if (this.u && this.box.clientWidth > 0 && Math.abs(this.u.width - this.box.clientWidth) > 2) {
        this.u.setSize({ width: this.box.clientWidth, height: PLOT_H });
      }
    });
    this.ro.observe(this.box);
    window.addEventListener("flightlog-theme", this.onTheme);
  }

  private onTheme = () => this.u?.redraw(false, true);

  private buckets(): number {
    return Math.max(64, Math.min(2000, Math.round(this.box.clientWidth || 600)));
  }

  /** Whether `load()` was called (charts are loaded when they come near the screen). */
  get started(): boolean {
    return this.loading !== null || this.loaded;
  }

  /**
   * Re-reads after points were missed: one read at a time (calls while one is on its way join one more after
   * it), at most every 250 ms, so a busy stream cannot pile reads up or have each replaced by the next.
   */
  private reread = throttle(() => this.load(), 250);

  /** Reads every source (in parallel, downsampled); again when called again (a retry, a resync). */
  load(): Promise<void> {
    // Tracked from its first read: a chart that is never scrolled to does not hold up the charts-drawn mark.
    if (!this.firstDrawn) this.tracker?.add(this);
    const p = this.read();
    this.loading = p;
    return p;
  }

  private async read(): Promise<void> {
    const mine = ++this.loadSeq;
    this.reading++;
    try {
      await this.readAll(mine);
    } finally {
      this.reading--;
    }
  }

  private async readAll(mine: number): Promise<void> {
    // Let the caller put the card in the page first, so the bucket count is the plot's real width.
    await Promise.resolve();
    const b = this.buckets();
    const results = await Promise.allSettled(
      this.sources.map((s) => readScalars(s.runId, s.metric, { buckets: b }, this.abort.signal)),
    );
    if (this.abort.signal.aborted || mine !== this.loadSeq) return;
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      // Shown in the card (with a retry), never an empty chart marked drawn.
      this.u?.destroy();
      this.u = undefined;
      this.box.replaceChildren(errorBox(failed.reason, () => {
        this.box.replaceChildren(h("div.hint", null, "loading…"));
        void this.load();
      }));
      this.card.dataset.error = "true";
      return;
    }
    delete this.card.dataset.error;
    let hole = false;
    results.forEach((r, i) => {
      if (r.status !== "fulfilled") return;
      const c = toCols(r.value);
      // The answer (whole or downsampled) stands for the series' points [0, total).
      let have = r.value.total;
      // Live points that arrived while reading: those past what the read holds go after it.
      const p = this.pending[i];
      for (let k = 0; k < p.index.length; k++) {
        if (p.index[k] < have) continue;
        if (p.index[k] > have) {
          hole = true; // points missed between the read and the stream: read again
          break;
        }
        c.steps.push(p.steps[k]);
        c.times.push(p.times[k]);
        c.values.push(p.values[k]);
        have++;
      }
      this.pending[i] = { index: [], steps: [], times: [], values: [] };
      this.full[i] = c;
      this.have[i] = have;
    });
    if (hole) this.reread();
    const wasLoaded = this.loaded;
    this.loaded = true;
    if (wasLoaded && this.zoomedIn()) {
      // A re-read keeps the user's zoom: the scale stays, and the zoomed range is read again.
      this.redraw(false);
      if (this.zoom) void this.readDetail(this.zoom.minStep, this.zoom.maxStep);
    } else {
      this.redraw(true);
    }
  }

  /**
   * New points of one run's series from the live stream: points `[fromIndex, fromIndex + steps.length)`.
   * Points the chart holds are skipped; a batch that starts past them (points missed while the stream was
   * down or not yet open) re-reads the series instead.
   */
  append(runId: string, fromIndex: number, steps: number[], times: number[], values: number[]): void {
    let gap = false;
    let added = false;
    this.sources.forEach((s, i) => {
      if (s.runId !== runId) return;
      if (values.length) this.latestValue = values[values.length - 1];
      if (!this.started) {
        // Not read yet: its first read will hold these points.
        this.latestEl.textContent = this.latest();
        return;
      }
      if (!this.loaded || this.reading) {
        // A read is on its way: held by index, and merged after what the read holds when it lands.
        const p = this.pending[i];
        for (let k = 0; k < steps.length; k++) {
          const at = fromIndex + k;
          if (p.index.length && at <= p.index[p.index.length - 1]) continue;
          p.index.push(at);
          p.steps.push(steps[k]);
          p.times.push(times[k]);
          p.values.push(values[k]);
        }
        return;
      }
      if (fromIndex > this.have[i]) {
        gap = true;
        return;
      }
      const f = this.full[i];
      const d = this.zoom ? this.detail[i] : null;
      for (let k = this.have[i] - fromIndex; k < steps.length; k++) {
        f.steps.push(steps[k]);
        f.times.push(times[k]);
        f.values.push(values[k]);
        if (d && this.zoom && steps[k] >= this.zoom.minStep && steps[k] <= this.zoom.maxStep) {
          d.steps.push(steps[k]);
          d.times.push(times[k]);
          d.values.push(values[k]);
        }
        this.have[i]++;
        added = true;
      }
    });
    if (gap) {
      this.reread();
      return;
    }
    if (!this.loaded || !added) return;
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame(() => this.redraw(!this.zoomedIn()));
  }

  /** Whether the user zoomed in (the finer read of the range may still be on its way). */
  private zoomedIn(): boolean {
    if (this.zoom) return true;
    const u = this.u;
    const xs = u?.data[0];
    if (!u || !xs || !xs.length) return false;
    const { min, max } = u.scales.x;
    return min !== undefined && max !== undefined && (min > xs[0] || max < xs[xs.length - 1]);
  }

  /** Reads a run's points past those held and appends them (for streams that announce points without data). */
  async fetchNew(runId: string): Promise<void> {
    if (!this.loaded) await this.loading;
    if (!this.loaded || this.abort.signal.aborted) return;
    const reads = this.sources.map(async (s, i) => {
      if (s.runId !== runId) return;
      const from = this.have[i];
      const got = await readScalars(s.runId, s.metric, { startIndex: from }, this.abort.signal);
      if (this.abort.signal.aborted || this.have[i] !== from) return;
      this.append(runId, from, Array.from(got.steps), Array.from(got.times), Array.from(got.values));
    });
    await Promise.allSettled(reads);
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
    if (this.loaded && !this.card.dataset.error) this.redraw(true);
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
    for (let k = 0; k < f.steps.length; k++) if (f.steps[k] < this.zoom.minStep) push(f, k);
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

  private data(): { data: uPlot.AlignedData; raw: (number | undefined)[][]; points: number; nan: number; posInf: number; negInf: number } {
    const tables: uPlot.AlignedData[] = [];
    const rawTables: uPlot.AlignedData[] = [];
    let points = 0;
    let nan = 0;
    let posInf = 0;
    let negInf = 0;
    this.sources.forEach((_, i) => {
      const c = this.view(i);
      points += c.values.length;
      let xs = this.xOf(c, i);
      let vs = c.values;
      // uPlot needs ascending x on every axis: steps go back when a run resumes from a checkpoint, wall times
      // may repeat or go back. A stable sort keeps points of one x in the order they were logged.
      if (!ascending(xs)) {
        const order = xs.map((_, k) => k).sort((a, b) => xs[a] - xs[b] || a - b);
        xs = order.map((k) => xs[k]);
        vs = order.map((k) => vs[k]);
      }
      for (const v of vs) {
        if (isNaN(v)) nan++;
        else if (v === Infinity) posInf++;
        else if (v === -Infinity) negInf++;
      }
      let ys: (number | null)[] = vs.map((v) => (isFinite(v) && (!this.settings.log || v > 0) ? v : null));
      ys = smooth(ys, this.settings.smoothing);
      tables.push([xs, ys] as unknown as uPlot.AlignedData);
      rawTables.push([xs, vs] as unknown as uPlot.AlignedData);
    });
    const counts = { points, nan, posInf, negInf };
    // The logged values behind the gaps, for the tooltip: only needed (and, over several runs, joined) when a
    // series has a non-finite value.
    const nonFinite = nan + posInf + negInf > 0;
    if (tables.length === 1) return { data: tables[0], raw: nonFinite ? [[], rawTables[0][1] as number[]] : [], ...counts };
    const raw = nonFinite ? (uPlot.join(rawTables) as unknown as (number | undefined)[][]) : [];
    return { data: uPlot.join(tables), raw, ...counts };
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

  /** "2 NaN · 1 +Inf": points that a line cannot show, counted in the title so a divergence is not missed. */
  private showNonFinite(nan: number, posInf: number, negInf: number): void {
    const parts = [nan ? `${nan} NaN` : "", posInf ? `${posInf} +Inf` : "", negInf ? `${negInf} −Inf` : ""].filter(Boolean);
    this.badge.hidden = parts.length === 0;
    this.badge.textContent = parts.join(" · ");
    this.badge.title = parts.length ? "points with a non-finite value (not drawn; hover their step to see them)" : "";
    this.card.dataset.nan = String(nan);
    this.card.dataset.posInf = String(posInf);
    this.card.dataset.negInf = String(negInf);
  }

  redraw(resetScales: boolean): void {
    if (!this.card.isConnected && this.u) return;
    const { data, raw, points, nan, posInf, negInf } = this.data();
    this.raw = raw;
    this.card.dataset.series = String(this.sources.length);
    this.card.dataset.points = String(points);
    this.latestEl.textContent = this.latest();
    this.showNonFinite(nan, posInf, negInf);
    if (!this.u) {
      this.box.replaceChildren();
      const rawOf = (sidx: number, idx: number) => this.raw[sidx]?.[idx];
      const series = this.sources.map((s) => lineSeries(s.label, s.color, rawOf));
      const opts = baseOpts(this.box.clientWidth || 600, PLOT_H, this.settings.x, this.settings.log, series);
      opts.hooks = {
        draw: [() => this.onDraw()],
        setScale: [(u, key) => key === "x" && this.onScale(u)],
      };
      this.u = new uPlot(opts, data, this.box);
      this.u.over.addEventListener("dblclick", () => this.resetZoom());
      // Legend labels are cut with an ellipsis (style.css): the full name on hover.
      this.box.querySelectorAll<HTMLElement>(".u-legend .u-label").forEach((el) => (el.title = el.textContent ?? ""));
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
      // Whether a line bridges the gaps left by non-finite values (it must not: see lineSeries).
      this.card.dataset.spanGaps = String(this.u.series.slice(1).some((s) => s.spanGaps));
      // The x range in view (a zoom shows here): for tests and for anyone inspecting the page.
      const { min, max } = this.u.scales.x;
      this.card.dataset.xMin = String(min ?? "");
      this.card.dataset.xMax = String(max ?? "");
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
    await this.readDetail(lo, hi);
    this.onZoomStep?.(lo, hi);
  }

  private async readDetail(lo: number, hi: number): Promise<void> {
    const zoom = { minStep: lo, maxStep: hi };
    const b = this.buckets();
    const got = await Promise.allSettled(
      this.sources.map((s) => readScalars(s.runId, s.metric, { buckets: b, minStep: lo, maxStep: hi }, this.abort.signal)),
    );
    if (this.abort.signal.aborted) return;
    this.zoom = zoom;
    this.detail = got.map((r) => (r.status === "fulfilled" ? toCols(r.value) : null));
    this.redraw(false);
  }

  private resetZoom(): void {
    this.zoom = null;
    this.detail = this.detail.map(() => null);
    this.redraw(true);
  }

  destroy(): void {
    this.abort.abort();
    this.reread.cancel();
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
    const series = ys.map((y, i) => ({ ...lineSeries(y.label, PALETTE[i % PALETTE.length]), spanGaps: true, points: { show: xs.length <= 60, size: 5 } }));
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
