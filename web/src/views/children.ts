// The children tab: the run's child runs, with status, duration and their latest scalar metrics. Live from the
// experiment's stream: the run's own stream carries only its own events, and a child's events carry the child's
// id, so new children, their status changes and new values come from the experiment stream.
import { listAll, normalizeRun, Run, StreamEvent, subscribeThenRead } from "../api";
import { duration, errorBox, fmtDuration, fmtTime, fmtValue, h, isActive, markPerf, statusBadge, throttle } from "../util";
import type { TabCtx, TabHandle } from "./run";

export function childrenTab({ run, root }: TabCtx): TabHandle {
  const box = h("div.card", { "data-testid": "child-runs" });
  root.append(box);
  let kids: Run[] = [];
  let byId = new Map<string, Run>();
  /** Each child's metric cells, patched in place by live values. */
  let cells = new Map<string, HTMLElement>();
  const cellKey = (runId: string, metric: string) => `${runId}\u0000${metric}`;
  let alive = true;
  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    try {
      const got = (await listAll<Run>("/api/v1/runs", new URLSearchParams({ parent_id: run.id, with_metrics: "true", limit: "1000" }))).map(normalizeRun);
      if (!alive || mine !== seq) return;
      kids = got;
      byId = new Map(kids.map((k) => [k.id, k]));
    } catch (e) {
      if (alive && mine === seq) box.replaceChildren(errorBox(e, () => void load()));
      return;
    }
    draw();
    markPerf("charts-drawn");
  };
  const draw = () => {
    const metrics = [...new Set(kids.flatMap((k) => k.metrics.filter((m) => m.kind === "scalar").map((m) => m.name)))].sort();
    const params = [...new Set(kids.flatMap((k) => Object.keys(k.params)))].sort();
    cells = new Map();
    box.replaceChildren(
      h(
        "table.grid",
        null,
        h("thead", null, h("tr", null, h("th", null, "Name"), h("th", null, "Status"), h("th", null, "Started"), h("th", null, "Duration"),
          params.map((p) => h("th", null, p)), metrics.map((m) => h("th.num", null, m)))),
        h(
          "tbody",
          null,
          kids.map((k) => {
            const last = new Map(k.metrics.map((m) => [m.name, m.last_value]));
            return h(
              "tr",
              { "data-testid": "run-row", "data-run-id": k.id, "data-depth": "0" },
              h("td", { "data-testid": "run-cell", "data-column": "name" }, h("a", { href: `/runs/${k.id}` }, k.display_name || k.id.slice(0, 8))),
              h("td", { "data-testid": "run-cell", "data-column": "status" }, statusBadge(k.status)),
              h("td.muted", null, fmtTime(k.start_time ?? k.created_time)),
              h("td", { "data-testid": "run-cell", "data-column": "duration" }, fmtDuration(duration(k))),
              params.map((p) => h("td", { "data-testid": "run-cell", "data-column": `param:${p}` }, k.params[p] ?? "")),
              metrics.map((m) => {
                const td = h("td.num", { "data-testid": "run-cell", "data-column": `metric:${m}` }, fmtValue(last.get(m)));
                cells.set(cellKey(k.id, m), td);
                return td;
              }),
            );
          }),
          kids.length ? null : h("tr", null, h("td.empty", { colspan: 4 }, "No child runs.")),
        ),
      ),
    );
  };
  const reload = throttle(load, 300);
  // A metric no child had before adds a column: the table is drawn again, at most once a second.
  const redraw = throttle(draw, 1000);
  // The stream opens before the first read; if it opens later, the list is read again.
  const close = subscribeThenRead(
    `/api/v1/experiments/${run.experiment_id}/events`,
    (e: StreamEvent) => {
      if (e.type === "run_created" && e.parent_id === run.id) return reload();
      const k = e.run_id ? byId.get(e.run_id) : undefined;
      if (!k) return;
      if (e.type === "run_updated") reload();
      else if (e.type === "points" && e.kind === "scalar") {
        // A new latest value is patched in place (the event carries it): no read per point.
        const name = e.name as string;
        const m = k.metrics.find((x) => x.name === name);
        if (m) m.last_value = e.last_value;
        else k.metrics.push({ name, kind: "scalar", count: Number(e.count ?? 0), last_value: e.last_value });
        const cell = cells.get(cellKey(k.id, name));
        if (cell) cell.textContent = fmtValue(e.last_value);
        else redraw();
      }
    },
    load,
    reload,
  );
  // Durations of active children tick in place.
  const ticker = window.setInterval(() => {
    for (const row of box.querySelectorAll<HTMLElement>('[data-testid="run-row"]')) {
      const k = byId.get(row.dataset.runId ?? "");
      const cell = row.querySelector<HTMLElement>('[data-column="duration"]');
      if (k && cell && isActive(k.status)) cell.textContent = fmtDuration(duration(k));
    }
  }, 1000);
  return {
    destroy() {
      alive = false;
      close();
      reload.cancel();
      redraw.cancel();
      clearInterval(ticker);
    },
  };
}
