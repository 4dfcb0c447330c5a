// Compare runs: a metric overlaid across runs (one chart per metric, one series per run), images of the same
// name side by side, and params + final metrics in one table with differing rows marked. Live through the
// experiment streams (one connection per experiment, not per run).
import { getJson, getRun, Run, StreamEvent, subscribeThenRead } from "../api";
import { DrawTracker, PALETTE, ScalarChart } from "../chart";
import { setQuery } from "../router";
import { fmtDuration, fmtTime, fmtValue, h, markPerf, resetPerf, setCrumbs, statusBadge, throttle } from "../util";
import { atStep, figure, gallery, imageFeeds, ImageSeries } from "./images";
import { chartControls, settingsFrom } from "./metrics";

const TABS = ["metrics", "images", "table"] as const;

export function compareView(root: HTMLElement, _p: string[], query: URLSearchParams): () => void {
  resetPerf();
  const ids = [...new Set((query.get("runs") ?? "").split(",").map((s) => s.trim()).filter(Boolean))];
  const tab = (TABS as readonly string[]).includes(query.get("tab") ?? "") ? query.get("tab")! : "metrics";
  let alive = true;
  const cleanups: (() => void)[] = [];
  const page = h("div.page");
  root.append(page);
  setCrumbs(h("a", { href: "/" }, "Experiments"), `Compare ${ids.length} runs`);

  (async () => {
    const got = await Promise.all(ids.map((id) => getRun(id).catch(() => null)));
    if (!alive) return;
    const runs = got.filter((r): r is Run => !!r);
    const missing = ids.filter((id) => !runs.some((r) => r.id === id));
    const color = (i: number) => PALETTE[i % PALETTE.length];
    const label = (r: Run) => r.display_name || r.id.slice(0, 8);
    if (runs.length && runs.every((r) => r.experiment_id === runs[0].experiment_id)) {
      const exp = await getJson<{ name: string }>(`/api/v1/experiments/${runs[0].experiment_id}`).catch(() => null);
      setCrumbs(h("a", { href: "/" }, "Experiments"), h("a", { href: `/experiments/${runs[0].experiment_id}` }, exp?.name ?? runs[0].experiment_id), `Compare ${runs.length} runs`);
    }
    const base = `/compare?runs=${ids.join(",")}`;
    page.append(
      h("div.toolbar", null, h("h1", null, `Compare ${runs.length} runs`)),
      h(
        "div.toolbar",
        null,
        runs.map((r, i) =>
          h(
            "span.card",
            { style: "padding:4px 10px;display:inline-flex;align-items:center;gap:6px", "data-testid": "compare-run", "data-run-id": r.id },
            h("span.swatch", { style: `background:${color(i)}` }),
            h("a", { href: `/runs/${r.id}` }, label(r)),
            statusBadge(r.status),
            // A deleted run is still compared (an old link), but says what it is.
            r.lifecycle === "deleted" ? h("span.badge.st-failed", { "data-testid": "run-deleted", title: "This run is deleted" }, "deleted") : null,
          ),
        ),
      ),
      missing.length ? h("div.error", null, `Not found: ${missing.join(", ")}`) : "",
      h("nav.tabs", null, TABS.map((t) => h("a", { href: `${base}&tab=${t}`, class: t === tab ? "on" : "" }, t[0].toUpperCase() + t.slice(1)))),
    );
    const body = h("div", { style: "display:flex;flex-direction:column;gap:12px" });
    page.append(body);
    if (tab === "table") {
      body.append(compareTable(runs, color));
      markPerf("charts-drawn");
    } else if (tab === "images") {
      cleanups.push(compareImages(body, runs, label, query));
    } else {
      cleanups.push(compareMetrics(body, runs, color, label, query));
    }
  })();

  return () => {
    alive = false;
    cleanups.forEach((c) => c());
  };
}

function compareMetrics(body: HTMLElement, runs: Run[], color: (i: number) => string, label: (r: Run) => string, query: URLSearchParams): () => void {
  let settings = settingsFrom(query);
  const tracker = new DrawTracker(() => markPerf("charts-drawn"));
  const names = [...new Set(runs.flatMap((r) => r.metrics.filter((m) => m.kind === "scalar").map((m) => m.name)))].sort();
  const charts = new Map<string, ScalarChart>();
  const grid = h("div.charts");
  body.append(chartControls(settings, (s) => {
    settings = s;
    charts.forEach((c) => c.setSettings(s));
  }), grid);
  for (const name of names) {
    const sources = runs
      .map((r, i) => ({ r, i }))
      .filter(({ r }) => r.metrics.some((m) => m.name === name && m.kind === "scalar"))
      .map(({ r, i }) => ({
        runId: r.id,
        metric: name,
        label: label(r),
        color: color(i),
        origin: r.start_time,
      }));
    const chart = new ScalarChart(sources, settings, tracker, "compare-chart");
    charts.set(name, chart);
    grid.append(chart.card);
  }
  if (!names.length) {
    grid.append(h("div.card.pad.muted", null, "These runs share no scalar metrics."));
    tracker.arm();
  }
  // Live: the experiment stream announces points (without data); the affected chart reads only the points
  // past those it holds (it knows the series' length at its read) and appends them, so the user's zoom stays.
  // Throttled per (metric, run) pair; the reads of one flush finish before the next starts.
  const pending = new Map<string, Set<string>>();
  const flush = throttle(() => {
    const reads: Promise<void>[] = [];
    pending.forEach((runIds, n) => runIds.forEach((id) => charts.get(n) && reads.push(charts.get(n)!.fetchNew(id))));
    pending.clear();
    return Promise.allSettled(reads);
  }, 300);
  const wanted = new Set(runs.map((r) => r.id));
  // The streams open before the charts read; if they open late, each chart reads what was logged meanwhile.
  const close = subscribeThenRead(
    [...new Set(runs.map((r) => r.experiment_id))].map((exp) => `/api/v1/experiments/${exp}/events`),
    (e: StreamEvent) => {
      if (e.type === "points" && e.kind === "scalar" && wanted.has(e.run_id ?? "") && charts.has(e.name as string)) {
        const name = e.name as string;
        if (!pending.has(name)) pending.set(name, new Set());
        pending.get(name)!.add(e.run_id!);
        flush();
      }
    },
    () => {
      charts.forEach((c) => void c.load());
      // Armed once every chart is reading (a chart is tracked from its first read): armed before, with none
      // pending, it marked the charts drawn before any was.
      tracker.arm();
    },
    () => charts.forEach((c) => runs.forEach((r) => void c.fetchNew(r.id))),
  );
  return () => {
    flush.cancel();
    close();
    charts.forEach((c) => c.destroy());
  };
}

function compareImages(body: HTMLElement, runs: Run[], label: (r: Run) => string, query: URLSearchParams): () => void {
  const names = [...new Set(runs.flatMap((r) => r.metrics.filter((m) => m.kind === "image").map((m) => m.name)))].sort();
  const series: ImageSeries[] = names.flatMap((name) =>
    runs.filter((r) => r.metrics.some((m) => m.name === name && m.kind === "image")).map((r) => ({ runId: r.id, runLabel: label(r), name, records: [] })),
  );
  const stepQ = query.get("step");
  const g = gallery(series, stepQ === null ? null : Number(stepQ), (step) =>
    h(
      "div",
      { style: "display:flex;flex-direction:column;gap:16px" },
      names.map((name) =>
        h(
          "div",
          null,
          h("h2", null, name),
          h("div.gallery", null, series.filter((s) => s.name === name).map((s) => figure(s, atStep(s.records, step), s.runLabel ?? s.runId))),
        ),
      ),
    ),
  );
  const errSlot = h("div");
  body.append(errSlot, g.el);
  if (!names.length) body.append(h("div.card.pad.muted", null, "No images in these runs."));
  const { feed } = imageFeeds(errSlot, g.update);
  const feeds = series.map((s) => feed(s));
  void Promise.all(feeds.map((f) => f.start())).then(() => {
    g.update();
    markPerf("charts-drawn");
  });
  return () => feeds.forEach((f) => f.cancel());
}

function compareTable(runs: Run[], color: (i: number) => string): HTMLElement {
  const onlyDiff = h("input", { type: "checkbox" });
  const rows: [string, string, string, (r: Run) => string][] = [
    ["status", "Status", "attr", (r) => r.status],
    ["user", "User", "attr", (r) => r.user],
    ["start_time", "Started", "attr", (r) => fmtTime(r.start_time ?? r.created_time)],
    ["duration", "Duration", "attr", (r) => fmtDuration(r.end_time && r.start_time ? r.end_time - r.start_time : undefined)],
  ];
  const params = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
  for (const p of params) rows.push([`param:${p}`, p, "param", (r) => r.params[p] ?? ""]);
  const metrics = [...new Set(runs.flatMap((r) => r.metrics.filter((m) => m.kind === "scalar").map((m) => m.name)))].sort();
  for (const m of metrics) {
    rows.push([`metric:${m}`, m, "metric", (r) => {
      const s = r.metrics.find((x) => x.name === m);
      return s ? fmtValue(s.last_value) : "";
    }]);
  }
  const tbody = h("tbody");
  const draw = () => {
    let section = "";
    tbody.replaceChildren(
      ...rows.flatMap(([key, name, kind, get]) => {
        const values = runs.map(get);
        const differs = values.some((v) => v !== values[0]);
        if (onlyDiff.checked && !differs) return [];
        const out: HTMLElement[] = [];
        if (kind !== section) {
          section = kind;
          out.push(h("tr", null, h("th", { colspan: runs.length + 1, style: "background:var(--panel);color:var(--text)" }, kind === "attr" ? "Run" : kind === "param" ? "Parameters" : "Final metric values")));
        }
        out.push(
          h(
            "tr",
            { "data-testid": "compare-row", "data-key": key, "data-differs": String(differs), class: differs ? "diff" : "" },
            h("td.mono", { style: "color:var(--muted)" }, name),
            values.map((v) => h(kind === "metric" ? "td.num" : "td", null, v)),
          ),
        );
        return out;
      }),
    );
  };
  onlyDiff.addEventListener("change", () => {
    setQuery({ diff: onlyDiff.checked ? "1" : null });
    draw();
  });
  draw();
  return h(
    "div",
    { style: "display:flex;flex-direction:column;gap:10px" },
    h("label.check", null, onlyDiff, "Only rows that differ"),
    h(
      "div.card",
      { style: "overflow:auto" },
      h(
        "table.grid",
        { "data-testid": "compare-table" },
        h("thead", null, h("tr", null, h("th", null, "Key"), runs.map((r, i) => h("th", null, h("span.swatch", { style: `background:${color(i)}` }), h("a", { href: `/runs/${r.id}` }, r.display_name || r.id.slice(0, 8)))))),
        tbody,
      ),
    ),
  );
}
