// The runs of an experiment: one request for the whole table (GET /api/v1/runs/table, filtered by the server
// with MLflow's grammar), sorting, column choice and child nesting in the browser, and a virtualized body
// (only the rows in view exist), so 10,000 runs open and scroll without stalls. Live via the experiment stream.
import { ApiError, Experiment, getJson, StreamEvent, subscribeThenRead } from "../api";
import { navigate, setQuery } from "../router";
import { duration, errorBox, fmtDuration, fmtTime, fmtValue, h, isActive, markPerf, num, resetPerf, setCrumbs, statusBadge, throttle } from "../util";

interface TableRun {
  id: string;
  name: string;
  status: string;
  parent_id?: string;
  user: string;
  created_time: number;
  start_time?: number;
  end_time?: number;
  params: Record<string, string>;
  metrics: Record<string, unknown>;
}

interface Table {
  total: number;
  param_keys: string[];
  metric_keys: string[];
  runs: TableRun[];
}

interface Col {
  key: string;
  label: string;
  cls: string;
  value: (r: TableRun) => unknown;
  text: (r: TableRun) => string | Node;
}

const ROW_H = 34;
const OVERSCAN = 8;
const DEFAULT_EXTRA_COLS = 24;
/** "Select all" selects at most this many runs (compare overlays them in one chart). */
const SELECT_MAX = 50;
const BASE_COLS: Col[] = [
  { key: "status", label: "Status", cls: "w-status", value: (r) => r.status, text: (r) => statusBadge(r.status) },
  { key: "duration", label: "Duration", cls: "w-duration num", value: duration, text: (r) => fmtDuration(duration(r)) },
  { key: "user", label: "User", cls: "w-user", value: (r) => r.user, text: (r) => r.user },
  { key: "start", label: "Started", cls: "w-start", value: (r) => r.start_time ?? r.created_time, text: (r) => fmtTime(r.start_time ?? r.created_time) },
];

function paramCol(k: string): Col {
  return { key: `param:${k}`, label: k, cls: "w-col", value: (r) => r.params[k], text: (r) => r.params[k] ?? "" };
}
function metricCol(k: string): Col {
  return { key: `metric:${k}`, label: k, cls: "w-col num", value: (r) => r.metrics[k], text: (r) => fmtValue(r.metrics[k]) };
}

/** Compares two cell values: numbers numerically (also numeric strings), text otherwise; missing last. */
function cmp(a: unknown, b: unknown): number {
  const am = a === undefined || a === null || a === "";
  const bm = b === undefined || b === null || b === "";
  if (am || bm) return am && bm ? 0 : am ? 1 : -1;
  const an = num(a);
  const bn = num(b);
  if (!isNaN(an) && !isNaN(bn)) return an - bn;
  if (!isNaN(an) !== !isNaN(bn)) return isNaN(an) ? 1 : -1;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export function runsView(root: HTMLElement, params: string[], query: URLSearchParams): () => void {
  resetPerf();
  const expId = params[0];
  let alive = true;
  let table: Table = { total: 0, param_keys: [], metric_keys: [], runs: [] };
  let filter = query.get("filter") ?? "";
  const sortQ = query.get("sort") ?? "";
  const sortAt = sortQ.lastIndexOf(":");
  let sort = sortAt > 0 ? { key: sortQ.slice(0, sortAt), asc: sortQ.slice(sortAt + 1) !== "desc" } : { key: "start", asc: false };
  let chosen: string[] | null = query.get("cols") ? query.get("cols")!.split(",").filter(Boolean) : null;
  const expanded = new Set<string>();
  const selected = new Set<string>();
  let visible: { run: TableRun; depth: number; kids: number }[] = [];

  // --- chrome -------------------------------------------------------------------------------------------
  const title = h("h1", null, "Runs");
  const countEl = h("span.muted");
  const filterInput = h("input.search", {
    type: "search",
    "data-testid": "runs-filter",
    placeholder: "Filter: metrics.loss < 0.5 and params.lr = '0.01'",
    value: filter,
    style: "width:440px;font-family:var(--mono);font-size:12.5px",
  });
  const errorSlot = h("div");
  const loadErrorSlot = h("div");
  const selectNote = h("span.muted", { "data-testid": "select-note", style: "font-size:12px" });
  const compareBtn = h("button.btn.primary", { "data-testid": "compare-button", disabled: true }, "Compare");
  const colsBtn = h("button.btn", { "data-testid": "columns-button" }, "Columns ▾");
  const scroller = h("div.vt");
  const head = h("div.vt-head");
  const body = h("div.vt-body");
  scroller.append(head, body);
  const tableEl = h("div.card", { "data-testid": "runs-table", "data-total-runs": "0" }, scroller);
  root.append(
    h(
      "div.page",
      null,
      h("div.toolbar", null, title, countEl, h("div.spacer"), selectNote, colsBtn, compareBtn),
      h("div.toolbar", null, filterInput, h("button.btn", { onclick: () => applyFilter() }, "Apply"), h("span.muted", { style: "font-size:12px" }, "MLflow search syntax · Enter to apply")),
      errorSlot,
      loadErrorSlot,
      tableEl,
    ),
  );
  setCrumbs(h("a", { href: "/" }, "Experiments"), "…");
  // A missing or malformed experiment says so and stops, rather than looking like an empty experiment.
  let missing = false;
  getJson<Experiment>(`/api/v1/experiments/${expId}`)
    .then((e) => {
      title.textContent = e.name;
      setCrumbs(h("a", { href: "/" }, "Experiments"), e.name);
      document.title = `${e.name} · flightlog`;
    })
    .catch((e) => {
      if (!alive || !(e instanceof ApiError) || (e.status !== 404 && e.status !== 400)) return;
      missing = true;
      close();
      title.textContent = "Not found";
      setCrumbs(h("a", { href: "/" }, "Experiments"), expId);
      root.replaceChildren(
        h(
          "div.page",
          null,
          h("div.errbox", { "data-testid": "experiment-not-found" }, e.status === 404 ? `Experiment ${expId} not found.` : e.message),
          h("a", { href: "/" }, "All experiments"),
        ),
      );
      markPerf("runs-table-ready");
    });

  // --- columns ------------------------------------------------------------------------------------------
  const columns = (): Col[] => {
    const extra = chosen
      ? chosen.map((k) => (k.startsWith("param:") ? paramCol(k.slice(6)) : k.startsWith("metric:") ? metricCol(k.slice(7)) : null)).filter((c): c is Col => !!c)
      : [...table.metric_keys.map(metricCol), ...table.param_keys.map(paramCol)].slice(0, DEFAULT_EXTRA_COLS);
    return [...BASE_COLS, ...extra];
  };
  let cols = columns();

  colsBtn.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const current = new Set(cols.map((c) => c.key));
    const box = (key: string, label: string) => {
      const cb = h("input", { type: "checkbox", checked: current.has(key), "data-testid": "column-choice", "data-column": key });
      cb.addEventListener("change", () => {
        const keys = columns().map((c) => c.key).filter((k) => k.includes(":"));
        const next = cb.checked ? [...keys, key] : keys.filter((k) => k !== key);
        chosen = next;
        setQuery({ cols: next.join(",") || "none" });
        cols = columns();
        renderHead();
        renderRows(true);
      });
      return h("label", null, cb, label);
    };
    const menu = h(
      "div.menu",
      { onclick: (e: Event) => e.stopPropagation() },
      h("h3", null, "Metrics"),
      table.metric_keys.map((k) => box(`metric:${k}`, k)),
      h("h3", { style: "margin-top:8px" }, "Params"),
      table.param_keys.map((k) => box(`param:${k}`, k)),
    );
    const r = colsBtn.getBoundingClientRect();
    menu.style.top = `${r.bottom + window.scrollY + 4}px`;
    menu.style.left = `${Math.max(8, r.right - 260)}px`;
    document.body.append(menu);
    const close = () => {
      menu.remove();
      document.removeEventListener("click", close);
    };
    setTimeout(() => document.addEventListener("click", close));
  });

  // --- rows ---------------------------------------------------------------------------------------------
  const buildVisible = () => {
    const ids = new Set(table.runs.map((r) => r.id));
    const kids = new Map<string, TableRun[]>();
    const tops: TableRun[] = [];
    for (const r of table.runs) {
      if (r.parent_id && ids.has(r.parent_id)) {
        let list = kids.get(r.parent_id);
        if (!list) kids.set(r.parent_id, (list = []));
        list.push(r);
      } else tops.push(r);
    }
    const col = sort.key === "name" ? { value: (r: TableRun) => r.name } : cols.find((c) => c.key === sort.key) ?? paramOrMetric(sort.key);
    const sorter = (list: TableRun[]) => {
      if (!col) return list;
      const dir = sort.asc ? 1 : -1;
      // Missing values stay last in both directions.
      return list.sort((a, b) => {
        const va = col.value(a);
        const vb = col.value(b);
        const missA = va === undefined || va === null || va === "";
        const missB = vb === undefined || vb === null || vb === "";
        if (missA || missB) return missA === missB ? 0 : missA ? 1 : -1;
        return dir * cmp(va, vb);
      });
    };
    const out: typeof visible = [];
    const walk = (list: TableRun[], depth: number) => {
      for (const r of sorter(list)) {
        const k = kids.get(r.id) ?? [];
        out.push({ run: r, depth, kids: k.length });
        if (k.length && expanded.has(r.id)) walk(k, depth + 1);
      }
    };
    walk(tops, 0);
    visible = out;
  };
  const paramOrMetric = (key: string): Col | undefined =>
    key.startsWith("param:") ? paramCol(key.slice(6)) : key.startsWith("metric:") ? metricCol(key.slice(7)) : undefined;

  const renderHead = () => {
    const toggleSort = (key: string) => {
      sort = sort.key === key ? { key, asc: !sort.asc } : { key, asc: true };
      setQuery({ sort: `${sort.key}:${sort.asc ? "asc" : "desc"}` });
      renderHead();
      buildVisible();
      renderRows(true);
      // The header was rebuilt: keep the keyboard where it was.
      head.querySelector<HTMLElement>(`[data-testid="runs-header"][data-column="${CSS.escape(key)}"]`)?.focus();
    };
    // Column heads sort from the keyboard too (Tab to one, Enter or Space) and tell screen readers the order.
    const cell = (key: string, label: string, cls: string) =>
      h(
        "div.c",
        {
          "data-testid": "runs-header",
          "data-column": key,
          role: "columnheader",
          tabindex: 0,
          "aria-sort": sort.key === key ? (sort.asc ? "ascending" : "descending") : "none",
          class: `${cls}${sort.key === key ? " sorted" : ""}${key.startsWith("metric:") ? " metric" : key.startsWith("param:") ? " param" : ""}`,
          title: key.startsWith("metric:") ? `metric ${label} (latest value)` : key.startsWith("param:") ? `param ${label}` : label,
          onclick: () => toggleSort(key),
          onkeydown: (e: Event) => {
            const k = (e as KeyboardEvent).key;
            if (k !== "Enter" && k !== " ") return;
            e.preventDefault();
            toggleSort(key);
          },
        },
        label,
        sort.key === key ? (sort.asc ? " ▲" : " ▼") : "",
      );
    const all = h("input", { type: "checkbox", title: "Select all shown", "aria-label": "Select all shown runs", "data-testid": "run-select-all" });
    all.addEventListener("change", () => {
      if (all.checked) visible.slice(0, SELECT_MAX).forEach((v) => selected.add(v.run.id));
      else selected.clear();
      // Compare overlays at most SELECT_MAX runs: say so instead of quietly selecting fewer than asked.
      selectNote.textContent = all.checked && visible.length > SELECT_MAX ? `Selected the first ${SELECT_MAX} of ${visible.length}` : "";
      updateCompare();
      renderRows(true);
    });
    head.setAttribute("role", "row");
    head.replaceChildren(h("div.c.w-sel", null, all), cell("name", "Name", "w-name"), ...cols.map((c) => cell(c.key, c.label, c.cls)));
  };

  let lastRange = "";
  const renderRows = (force = false) => {
    const total = visible.length;
    body.style.height = `${total * ROW_H}px`;
    const top = scroller.scrollTop;
    const height = scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(total, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const range = `${first}:${last}`;
    if (!force && range === lastRange) return;
    lastRange = range;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.append(rowEl(visible[i], i));
    body.replaceChildren(frag);
    if (total === 0) body.append(h("div.muted", { style: "padding:28px;text-align:center" }, errorSlot.firstChild ? "Fix the filter to see runs." : table.total === 0 && !filter ? "No runs yet." : "No run matches the filter."));
  };

  const rowEl = (v: (typeof visible)[number], i: number): HTMLElement => {
    const r = v.run;
    const sel = h("input", { type: "checkbox", "data-testid": "run-select", checked: selected.has(r.id), "aria-label": `Select run ${r.name || r.id}` });
    sel.addEventListener("change", () => {
      if (sel.checked) selected.add(r.id);
      else selected.delete(r.id);
      selectNote.textContent = "";
      row.classList.toggle("sel", sel.checked);
      updateCompare();
    });
    const twisty = v.kids
      ? h(
          "button.twisty",
          {
            "data-testid": "run-expand",
            title: `${v.kids} child runs`,
            style: "border:0;background:none;padding:0",
            onclick: () => {
              if (expanded.has(r.id)) expanded.delete(r.id);
              else expanded.add(r.id);
              buildVisible();
              renderRows(true);
            },
          },
          expanded.has(r.id) ? "▾" : "▸",
        )
      : h("span.twisty");
    const row = h(
      "div.vt-row",
      { "data-testid": "run-row", "data-run-id": r.id, "data-depth": v.depth, class: selected.has(r.id) ? "sel" : "", style: `top:${i * ROW_H}px` },
      h("div.c.w-sel", null, sel),
      h(
        "div.c.w-name",
        { style: `padding-left:${10 + v.depth * 18}px` },
        twisty,
        h("a", { href: `/runs/${r.id}`, title: r.id, "data-testid": "run-cell", "data-column": "name" }, r.name || r.id.slice(0, 8)),
        v.kids ? h("span.muted", { style: "font-size:11px;margin-left:6px" }, `${v.kids}`) : null,
      ),
      ...cols.map((c) => h("div.c", { class: c.cls, "data-testid": "run-cell", "data-column": c.key }, c.text(r))),
    );
    return row;
  };

  const updateCompare = () => {
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size ? `Compare (${selected.size})` : "Compare";
  };
  compareBtn.addEventListener("click", () => navigate(`/compare?runs=${[...selected].join(",")}`));

  let raf = 0;
  scroller.addEventListener("scroll", () => {
    cancelAnimationFrame(raf);
    raf = requestAnimationFrame(() => renderRows());
  });
  const onResize = () => renderRows(true);
  window.addEventListener("resize", onResize);

  // --- data ---------------------------------------------------------------------------------------------
  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    const q = new URLSearchParams({ experiment_id: expId });
    if (filter) q.set("filter", filter);
    try {
      const t = await getJson<Table>(`/api/v1/runs/table?${q}`);
      if (!alive || mine !== seq) return;
      table = t;
      errorSlot.replaceChildren();
      loadErrorSlot.replaceChildren();
    } catch (e) {
      if (!alive || mine !== seq || missing) return;
      // Only a rejected filter belongs under the filter; anything else (a proxy's 502, the server down) is a
      // load error with a retry, and the rows already shown stay.
      if (e instanceof ApiError && e.code === "INVALID_ARGUMENT" && /filter/i.test(e.message)) {
        errorSlot.replaceChildren(h("div.errbox", { "data-testid": "runs-filter-error" }, e.message));
        loadErrorSlot.replaceChildren();
        table = { total: 0, param_keys: table.param_keys, metric_keys: table.metric_keys, runs: [] };
      } else {
        loadErrorSlot.replaceChildren(errorBox(e, () => void load()));
        markPerf("runs-table-ready");
        return;
      }
    }
    tableEl.dataset.totalRuns = String(table.total);
    const top = table.runs.filter((r) => !r.parent_id).length;
    countEl.textContent = `${table.total} runs${top !== table.total ? ` · ${top} top level` : ""}${filter ? " match" : ""}`;
    cols = columns();
    renderHead();
    buildVisible();
    renderRows(true);
    markPerf("runs-table-ready");
  };
  const applyFilter = () => {
    filter = filterInput.value.trim();
    setQuery({ filter: filter || null }, true);
    void load();
  };
  filterInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") applyFilter();
  });
  filterInput.addEventListener("search", () => filterInput.value === "" && applyFilter());
  // Live: statuses and latest values patch rows in place; new runs reload the table. Both are throttled, not
  // debounced: a busy experiment sends events faster than any debounce delay, which then never ran.
  const reload = throttle(load, 400);
  const repaint = throttle(() => {
    buildVisible();
    renderRows(true);
  }, 100);
  // Rows by run id, for the table as last read (events and the ticker look runs up per event, per row).
  let byId = new Map<string, TableRun>();
  let byIdOf: Table | null = null;
  const runOf = (id: string | undefined): TableRun | undefined => {
    if (byIdOf !== table) {
      byIdOf = table;
      byId = new Map(table.runs.map((r) => [r.id, r]));
    }
    return id === undefined ? undefined : byId.get(id);
  };
  // The stream opens before the first read (the server starts a new stream at its newest event), so a run
  // created in between reaches the page. If the stream is slow to open, the table reads anyway, and again once
  // the stream is open.
  const close = subscribeThenRead(`/api/v1/experiments/${expId}/events`, (e: StreamEvent) => {
    if (e.type === "run_created") return reload();
    const r = runOf(e.run_id);
    if (!r) return;
    if (e.type === "run_updated") {
      if (typeof e.status === "string") r.status = e.status;
      if (filter || e.status_changed) reload();
      repaint();
    } else if (e.type === "points" && e.kind === "scalar") {
      const name = e.name as string;
      r.metrics[name] = e.last_value;
      if (!table.metric_keys.includes(name)) {
        table.metric_keys = [...table.metric_keys, name].sort();
        if (!chosen) {
          cols = columns();
          renderHead();
        }
      }
      if (filter && /metrics\./.test(filter)) reload();
      repaint();
    }
  }, load, reload);
  // Durations of active runs tick in place (rows are not rebuilt, so nothing moves under the pointer).
  const ticker = window.setInterval(() => {
    for (const row of body.querySelectorAll<HTMLElement>(".vt-row")) {
      const r = runOf(row.dataset.runId);
      const cell = row.querySelector<HTMLElement>('[data-column="duration"]');
      if (r && cell && isActive(r.status)) cell.textContent = fmtDuration(duration(r));
    }
  }, 1000);

  return () => {
    alive = false;
    close();
    reload.cancel();
    repaint.cancel();
    clearInterval(ticker);
    window.removeEventListener("resize", onResize);
  };
}
