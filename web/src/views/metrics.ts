// The metrics tab: a chart per metric — scalars (server-downsampled, zoomable, live), lists, rows and tables
// (XY with column pickers plus a table view), text series, confusion matrices (heatmap), histograms.
import { Record_, Run, SeriesInfo, StreamEvent } from "../api";
import { ChartSettings, chartCard, DrawTracker, ScalarChart, XMode, XYChart } from "../chart";
import { setQuery } from "../router";
import { debounce, errorBox, fmtValue, h, markPerf, num } from "../util";
import { recordFeed, RecordFeed } from "./feed";
import type { TabCtx, TabHandle } from "./run";

/** Chart settings from the URL (`x=step|time|relative`, `log=1`, `smooth=0.6`), shared with compare. */
export function settingsFrom(q: URLSearchParams): ChartSettings {
  const x = q.get("x");
  return {
    x: x === "time" || x === "relative" ? x : "step",
    log: q.get("log") === "1",
    smoothing: Math.min(0.99, Math.max(0, Number(q.get("smooth") ?? 0) || 0)),
  };
}

/** The toolbar above a chart grid: x axis, log scale, smoothing, name filter. */
export function chartControls(
  s: ChartSettings,
  onChange: (s: ChartSettings) => void,
  onFilter?: (text: string) => void,
  filterValue = "",
): HTMLElement {
  const seg = h("div.seg");
  const modes: [XMode, string][] = [
    ["step", "Step"],
    ["time", "Wall time"],
    ["relative", "Relative"],
  ];
  const drawSeg = () =>
    seg.replaceChildren(
      ...modes.map(([m, label]) =>
        h(
          "button",
          {
            class: s.x === m ? "on" : "",
            "data-x": m,
            onclick: () => {
              s = { ...s, x: m };
              setQuery({ x: m === "step" ? null : m });
              drawSeg();
              onChange(s);
            },
          },
          label,
        ),
      ),
    );
  drawSeg();
  const log = h("input", { type: "checkbox", checked: s.log, "data-testid": "chart-log" });
  log.addEventListener("change", () => {
    s = { ...s, log: log.checked };
    setQuery({ log: log.checked ? "1" : null });
    onChange(s);
  });
  const smoothLabel = h("span.mono", null, s.smoothing.toFixed(2));
  const smooth = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: s.smoothing, "data-testid": "chart-smoothing" });
  const applySmooth = debounce(() => {
    setQuery({ smooth: s.smoothing > 0 ? String(s.smoothing) : null });
    onChange(s);
  }, 60);
  smooth.addEventListener("input", () => {
    s = { ...s, smoothing: Number(smooth.value) };
    smoothLabel.textContent = s.smoothing.toFixed(2);
    applySmooth();
  });
  const filter = onFilter
    ? h("input.search", { type: "search", placeholder: "Filter metrics…", value: filterValue, "data-testid": "metrics-filter" })
    : null;
  filter?.addEventListener("input", debounce(() => onFilter!(filter.value), 80));
  return h(
    "div.chart-controls",
    null,
    h("span.muted", null, "X axis"),
    seg,
    h("label.check", null, log, "Log scale"),
    h("label.check", null, "Smoothing", smooth, smoothLabel),
    h("div.spacer"),
    filter,
    h("span.muted", { style: "font-size:12px" }, "drag to zoom · double-click to reset"),
  );
}

interface Card {
  info: SeriesInfo;
  el: HTMLElement;
  /** A scalar card's chart; the other kinds have a record feed. */
  scalar?: ScalarChart;
  feed?: RecordFeed;
  destroy?: () => void;
}

/** Whether a card was read (or is being read): cards are read when they come near the screen. */
const started = (c: Card): boolean => (c.scalar ? c.scalar.started : !!c.feed?.started);

/** First read and drawing of a card. */
/** Starts a card's read. A list, row or table card makes its chart (which the tracker then follows) only when
 * its read answers, so the card itself is tracked until then: the charts-drawn mark once came before them. */
const start = (c: Card, tracker: DrawTracker): void => {
  if (c.scalar) return void c.scalar.load();
  if (!c.feed) return;
  tracker.add(c);
  void c.feed.start().finally(() => tracker.drawn(c));
};

/** How far below (and above) the screen cards are read ahead of being scrolled to. */
const LOOKAHEAD = "1200px 0px";

export function metricsTab({ run, root, query }: TabCtx): TabHandle {
  let settings = settingsFrom(query);
  const tracker = new DrawTracker(() => markPerf("charts-drawn"));
  const grid = h("div.charts");
  const cards = new Map<string, Card>();
  let nameFilter = query.get("q") ?? "";
  const applyFilter = () => {
    for (const [name, c] of cards) c.el.style.display = !nameFilter || name.toLowerCase().includes(nameFilter.toLowerCase()) ? "" : "none";
  };
  root.append(
    h(
      "div.page",
      { style: "gap:12px" },
      chartControls(
        settings,
        (s) => {
          settings = s;
          for (const c of cards.values()) c.scalar?.setSettings(s);
        },
        (t) => {
          nameFilter = t;
          setQuery({ q: t || null });
          applyFilter();
        },
        nameFilter,
      ),
      grid,
    ),
  );

  // Cards are read and drawn when they come near the screen: a run with a thousand metrics would otherwise
  // send a thousand reads and keep a thousand canvases before the first chart shows. A card hidden by the
  // name filter never intersects, so it is not read either. The charts-drawn mark waits for the cards of the
  // first screen (those the observer reports first).
  let armed = false;
  const byEl = new Map<Element, Card>();
  const io = new IntersectionObserver(
    (entries) => {
      for (const en of entries) {
        const c = byEl.get(en.target);
        if (!en.isIntersecting || !c || started(c)) continue;
        io.unobserve(en.target);
        start(c, tracker);
      }
      if (!armed) {
        armed = true;
        tracker.arm();
      }
    },
    { rootMargin: LOOKAHEAD },
  );

  const add = (info: SeriesInfo): void => {
    if (info.kind === "image" || cards.has(info.name)) return;
    const card = makeCard(run, info, settings, tracker);
    cards.set(info.name, card);
    byEl.set(card.el, card);
    grid.append(card.el);
    io.observe(card.el);
  };
  // Scalars first (the usual interest), then the other kinds, each group by name.
  const order = (m: SeriesInfo) => (m.kind === "scalar" ? 0 : 1);
  [...run.metrics].sort((a, b) => order(a) - order(b) || a.name.localeCompare(b.name)).forEach((m) => add(m));
  applyFilter();
  if (!cards.size) {
    grid.append(h("div.card.pad.muted", null, "No metrics logged yet."));
    armed = true;
    tracker.arm();
  }

  return {
    onEvent(e: StreamEvent) {
      if (e.type !== "points") return;
      const name = e.name as string;
      const kind = e.kind as SeriesInfo["kind"];
      if (kind === "image") return;
      const from = Number(e.from_index ?? 0);
      const count = Number(e.count ?? 0);
      const card = cards.get(name);
      if (!card) {
        // A metric born while the page is open: its card reads it (these points included) when it shows.
        if (grid.firstChild && !(grid.firstChild as HTMLElement).classList.contains("chart-card")) grid.replaceChildren();
        add({ name, kind, count: from + count, last_value: e.last_value });
        applyFilter();
        return;
      }
      card.info.count = Math.max(card.info.count, from + count);
      if (card.scalar) {
        // The chart keeps points by index: it skips what it has and re-reads when points were missed.
        const steps = Array.isArray(e.steps) ? (e.steps as number[]) : null;
        if (steps) card.scalar.append(run.id, from, steps, e.times as number[], (e.values as unknown[]).map(num));
        else if (card.scalar.started) void card.scalar.fetchNew(run.id);
        if (e.last_value !== undefined && e.last_value !== null && !steps) card.scalar.setLatest(num(e.last_value));
      } else if (card.feed?.started) {
        card.feed.onRecords(from, count, Array.isArray(e.records) ? (e.records as Record_[]) : null);
      }
    },
    resync() {
      // The stream opened after the cards read: points logged in between reached neither. A chart holds its
      // series up to a known index, so it reads only what is past it; a record card reads again.
      for (const c of cards.values()) {
        if (c.scalar?.started) void c.scalar.fetchNew(run.id);
        else if (c.feed?.started) c.feed.reread();
      }
    },
    destroy() {
      io.disconnect();
      for (const c of cards.values()) {
        c.scalar?.destroy();
        c.destroy?.();
      }
    },
  };
}

function makeCard(run: Run, info: SeriesInfo, settings: ChartSettings, tracker: DrawTracker): Card {
  switch (info.kind) {
    case "scalar": {
      const chart = new ScalarChart(
        [{ runId: run.id, metric: info.name, label: run.display_name || info.name, color: "#3d6df2", origin: run.start_time }],
        settings,
        tracker,
      );
      if (info.last_value !== undefined && info.last_value !== null) chart.setLatest(num(info.last_value));
      return { info, el: chart.card, scalar: chart };
    }
    case "list":
      return listCard(run, info, tracker);
    case "row":
    case "table":
      return tabularCard(run, info, tracker);
    case "json":
      return jsonCard(run, info);
    case "histogram":
      return histogramCard(run, info);
    default:
      return textCard(run, info);
  }
}

/** A card's record feed; a failed read shows in `box` with its retry. */
function cardFeed(run: Run, info: SeriesInfo, box: HTMLElement, keep: number | null, draw: (recs: Record_[], total: number) => void): RecordFeed {
  return recordFeed(run.id, info, keep, draw, (e, retry) => box.replaceChildren(errorBox(e, retry)));
}

/** A list metric: its latest list drawn against the index. */
function listCard(run: Run, info: SeriesInfo, tracker: DrawTracker): Card {
  const { card, box, latest } = chartCard("metric-chart", info.name, "list");
  card.dataset.series = "1";
  let chart: XYChart | null = null;
  const feed = cardFeed(run, info, box, 1, (recs, total) => {
    const last = recs[recs.length - 1];
    const values = Array.isArray(last?.value) ? (last.value as unknown[]).map(num) : [];
    latest.textContent = `${values.length} values${total > 1 ? ` · step ${last.step}` : ""}`;
    chart ??= new XYChart(box, card, tracker);
    chart.set(
      "index",
      values.map((_, i) => i),
      [{ label: info.name, values: values.map((v) => (isFinite(v) ? v : null)) }],
      true,
    );
  });
  return { info, el: card, feed, destroy: () => (feed.cancel(), chart?.destroy()) };
}

/** Rows (`log_row`) or tables (`log_table`) as column arrays. */
function columnsOf(info: SeriesInfo, recs: Record_[]): { names: string[]; cols: Record<string, unknown[]>; n: number } {
  const cols: Record<string, unknown[]> = {};
  const names: string[] = [...(info.columns ?? [])];
  let n = 0;
  for (const r of recs) {
    const v = r.value as Record<string, unknown>;
    if (!v || typeof v !== "object") continue;
    for (const k of Object.keys(v)) if (!names.includes(k)) names.push(k);
    if (info.kind === "row") {
      for (const k of names) (cols[k] ??= new Array(n).fill(null)).push(v[k] ?? null);
      n++;
    } else {
      const len = Math.max(0, ...Object.values(v).map((a) => (Array.isArray(a) ? a.length : 0)));
      for (const k of names) {
        const a = Array.isArray(v[k]) ? (v[k] as unknown[]) : [];
        const col = (cols[k] ??= new Array(n).fill(null));
        for (let i = 0; i < len; i++) col.push(a[i] ?? null);
      }
      n += len;
    }
  }
  for (const k of names) (cols[k] ??= []).length = n;
  return { names, cols, n };
}

function tabularCard(run: Run, info: SeriesInfo, tracker: DrawTracker): Card {
  const xSel = h("select", { "data-testid": "metric-x" });
  const ySel = h("select", { "data-testid": "metric-y" });
  const view = h("div.seg");
  const pickers = h("div.picker", null, "x", xSel, "y", ySel, h("div.spacer"), view);
  const { card, box, latest } = chartCard("metric-chart", info.name, info.kind, pickers);
  card.classList.add("wide");
  const tableBox = h("div.small-table", { "data-testid": "metric-table", "data-metric": info.name });
  card.append(tableBox);
  let chart: XYChart | null = null;
  let data = { names: [] as string[], cols: {} as Record<string, unknown[]>, n: 0 };
  let mode: "chart" | "both" = "both";
  const drawChart = () => {
    const x = xSel.value;
    const ys = ySel.value === "*" ? data.names.filter((n) => n !== x && isNumeric(data.cols[n])) : [ySel.value];
    const xs = x === "#" ? data.cols[data.names[0]]?.map((_, i) => i) ?? [] : data.cols[x].map(num);
    chart ??= new XYChart(box, card, tracker);
    chart.set(
      x === "#" ? "row" : x,
      xs as number[],
      ys.filter((y) => data.cols[y]).map((y) => ({ label: y, values: data.cols[y].map((v) => (isFinite(num(v)) ? num(v) : null)) })),
    );
  };
  const drawTable = () => {
    tableBox.replaceChildren(
      h(
        "table.grid",
        null,
        h("thead", null, h("tr", null, data.names.map((n) => h("th", null, n)))),
        h(
          "tbody",
          null,
          Array.from({ length: data.n }, (_, i) => h("tr", null, data.names.map((n) => h("td", null, fmtValue(data.cols[n][i]))))),
        ),
      ),
    );
    tableBox.style.display = mode === "both" ? "" : "none";
  };
  const drawView = () =>
    view.replaceChildren(
      h("button", { class: mode === "both" ? "on" : "", onclick: () => ((mode = "both"), drawView(), drawTable()) }, "Chart + table"),
      h("button", { class: mode === "chart" ? "on" : "", onclick: () => ((mode = "chart"), drawView(), drawTable()) }, "Chart"),
    );
  drawView();
  xSel.addEventListener("change", drawChart);
  ySel.addEventListener("change", drawChart);
  const feed = cardFeed(run, info, box, null, (recs) => {
    data = columnsOf(info, recs);
    const numeric = data.names.filter((n) => isNumeric(data.cols[n]));
    const prevX = xSel.value;
    const prevY = ySel.value;
    xSel.replaceChildren(h("option", { value: "#" }, "row #"), ...data.names.map((n) => h("option", { value: n }, n)));
    ySel.replaceChildren(...numeric.map((n) => h("option", { value: n }, n)), h("option", { value: "*" }, "all numeric"));
    xSel.value = prevX && [...xSel.options].some((o) => o.value === prevX) ? prevX : numeric[0] ?? "#";
    ySel.value = prevY && [...ySel.options].some((o) => o.value === prevY) ? prevY : numeric.find((n) => n !== xSel.value) ?? numeric[0] ?? "*";
    latest.textContent = `${data.n} rows`;
    drawChart();
    drawTable();
  });
  return { info, el: card, feed, destroy: () => (feed.cancel(), chart?.destroy()) };
}

function isNumeric(col: unknown[] | undefined): boolean {
  return !!col && col.some((v) => typeof v === "number") && col.every((v) => v === null || typeof v === "number" || v === "NaN" || v === "Infinity" || v === "-Infinity");
}

/** How many entries a text card shows (and reads): the newest ones. */
const TEXT_KEEP = 500;

/** Text series: step and text, newest last (only the last TEXT_KEEP entries are read). */
function textCard(run: Run, info: SeriesInfo): Card {
  const { card, box, latest } = chartCard("metric-text", info.name, info.kind);
  box.className = "text-series";
  const feed = cardFeed(run, info, box, TEXT_KEEP, (recs, total) => {
    latest.textContent = `${total} entries`;
    box.replaceChildren(
      h(
        "table",
        null,
        recs.map((r) => h("tr", null, h("td.st", null, String(r.step)), h("td", null, typeof r.value === "string" ? r.value : JSON.stringify(r.value)))),
      ),
    );
    box.scrollTop = box.scrollHeight;
  });
  return { info, el: card, feed, destroy: feed.cancel };
}

/** JSON values: confusion matrices as heatmaps, anything else as its latest JSON (only the latest is read). */
function jsonCard(run: Run, info: SeriesInfo): Card {
  const { card, box, latest } = chartCard("metric-json", info.name, info.schema ?? "json");
  box.style.height = "auto";
  const feed = cardFeed(run, info, box, 1, (recs, total) => {
    const last = recs[recs.length - 1];
    if (!last) return;
    const v = last.value as { schema?: string; value?: unknown };
    const schema = v?.schema ?? info.schema;
    const body = (v?.value ?? v) as Record<string, unknown>;
    const inner = (body?.data as Record<string, unknown>) ?? body;
    latest.textContent = total > 1 ? `step ${last.step}` : "";
    if (schema === "confusion_matrix" && Array.isArray(inner?.matrix)) {
      box.replaceChildren(heatmap(inner.class_labels as string[] | undefined, inner.matrix as number[][]));
    } else {
      box.replaceChildren(h("pre.small-table", null, JSON.stringify(body, null, 2)));
    }
  });
  return { info, el: card, feed, destroy: feed.cancel };
}

function heatmap(labels: string[] | undefined, m: number[][]): HTMLElement {
  const n = m.length;
  const names = labels && labels.length === n ? labels : m.map((_, i) => String(i));
  const max = Math.max(1, ...m.flat().map(num).filter(isFinite));
  const cell = Math.max(18, Math.min(48, Math.floor(420 / Math.max(1, n))));
  const table = h(
    "table",
    { class: "heatmap-table", style: "border-collapse:collapse;font-size:12px;margin:4px auto" },
    h("tr", null, h("th"), names.map((l) => h("th", { style: `width:${cell}px;font-weight:500;color:var(--muted)` }, l))),
    m.map((row, i) =>
      h(
        "tr",
        null,
        h("th", { style: "text-align:right;padding-right:6px;font-weight:500;color:var(--muted)" }, names[i]),
        row.map((v, j) => {
          const t = num(v) / max;
          return h(
            "td",
            {
              title: `true ${names[i]} · predicted ${names[j]}: ${v}`,
              style: `width:${cell}px;height:${cell}px;text-align:center;background:rgba(61,109,242,${(0.08 + 0.92 * t).toFixed(3)});color:${t > 0.5 ? "#fff" : "var(--text)"}`,
            },
            fmtValue(v),
          );
        }),
      ),
    ),
  );
  return h("div", null, table, h("div.muted", { style: "text-align:center;font-size:11px" }, "rows: true · columns: predicted"));
}

/** Histograms: the one at the chosen step as bars. */
function histogramCard(run: Run, info: SeriesInfo): Card {
  const slider = h("input", { type: "range", min: 0, max: 0, value: 0 });
  const label = h("span.mono");
  const { card, box, latest } = chartCard("metric-histogram", info.name, "histogram", h("div.picker", null, "step", slider, label));
  const canvas = h("canvas.heatmap", { height: 200 });
  box.replaceChildren(canvas);
  let recs: Record_[] = [];
  const draw = () => {
    const r = recs[Number(slider.value)];
    if (!r) return;
    label.textContent = String(r.step);
    const v = r.value as { limits?: number[]; counts?: number[]; lower?: number };
    const counts = (v.counts ?? []).map(num);
    const w = (canvas.width = box.clientWidth || 400);
    const H = canvas.height;
    const g = canvas.getContext("2d")!;
    g.clearRect(0, 0, w, H);
    const max = Math.max(1, ...counts);
    const bw = w / Math.max(1, counts.length);
    g.fillStyle = "#3d6df2";
    counts.forEach((c, i) => {
      const bh = (c / max) * (H - 20);
      g.fillRect(i * bw + 1, H - 14 - bh, Math.max(1, bw - 2), bh);
    });
    g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--muted");
    g.font = "11px system-ui";
    const lim = v.limits ?? [];
    if (lim.length) {
      // Limits are upper edges: the left end is the first bucket's lower edge when it is known.
      g.fillText(fmtValue(v.lower ?? lim[0]), 2, H - 2);
      const t = fmtValue(lim[lim.length - 1]);
      g.fillText(t, w - g.measureText(t).width - 2, H - 2);
    }
  };
  slider.addEventListener("input", draw);
  const feed = cardFeed(run, info, box, null, (got) => {
    recs = got;
    if (canvas.parentNode !== box) box.replaceChildren(canvas);
    const atEnd = Number(slider.value) >= Number(slider.max);
    slider.max = String(Math.max(0, recs.length - 1));
    if (atEnd) slider.value = slider.max;
    latest.textContent = `${recs.length} steps`;
    draw();
  });
  return { info, el: card, feed, destroy: feed.cancel };
}
