// The children tab: the run's child runs, with status, duration and their latest scalar metrics. Live from the
// experiment's stream: the run's own stream carries only its own events, and a child's events carry the child's
// id, so new children, their status changes and new values come from the experiment stream.
import { listAll, normalizeRun, Run, StreamEvent, subscribe } from "../api";
import { errorBox, fmtDuration, fmtTime, fmtValue, h, isActive, markPerf, statusBadge, throttle } from "../util";
import type { TabCtx, TabHandle } from "./run";

/** A child's duration: to its end, or to now while it is active (as the runs table shows it). */
function duration(k: Run): number | undefined {
  const start = k.start_time ?? k.created_time;
  const end = k.end_time ?? (isActive(k.status) ? Date.now() * 1000 : undefined);
  return end === undefined ? undefined : end - start;
}

export function childrenTab({ run, root }: TabCtx): TabHandle {
  const box = h("div.card", { "data-testid": "child-runs" });
  root.append(box);
  let kids: Run[] = [];
  let alive = true;
  let seq = 0;
  let loadedOnce = false;
  const load = async () => {
    const mine = ++seq;
    try {
      const got = (await listAll<Run>("/api/v1/runs", new URLSearchParams({ parent_id: run.id, with_metrics: "true", limit: "1000" }))).map(normalizeRun);
      if (!alive || mine !== seq) return;
      kids = got;
    } catch (e) {
      if (alive && mine === seq) box.replaceChildren(errorBox(e, () => void load()));
      return;
    }
    loadedOnce = true;
    draw();
    markPerf("charts-drawn");
  };
  const draw = () => {
    const metrics = [...new Set(kids.flatMap((k) => k.metrics.filter((m) => m.kind === "scalar").map((m) => m.name)))].sort();
    const params = [...new Set(kids.flatMap((k) => Object.keys(k.params)))].sort();
    box.replaceChildren(
      h(
        "table.grid",
        null,
        h("thead", null, h("tr", null, h("th", null, "Name"), h("th", null, "Status"), h("th", null, "Started"), h("th", null, "Duration"),
          params.map((p) => h("th", null, p)), metrics.map((m) => h("th.num", null, m)))),
        h(
          "tbody",
          null,
          kids.map((k) =>
            h(
              "tr",
              { "data-testid": "run-row", "data-run-id": k.id, "data-depth": "0" },
              h("td", { "data-testid": "run-cell", "data-column": "name" }, h("a", { href: `/runs/${k.id}` }, k.display_name || k.id.slice(0, 8))),
              h("td", { "data-testid": "run-cell", "data-column": "status" }, statusBadge(k.status)),
              h("td.muted", null, fmtTime(k.start_time ?? k.created_time)),
              h("td", { "data-testid": "run-cell", "data-column": "duration" }, fmtDuration(duration(k))),
              params.map((p) => h("td", { "data-testid": "run-cell", "data-column": `param:${p}` }, k.params[p] ?? "")),
              metrics.map((m) =>
                h("td.num", { "data-testid": "run-cell", "data-column": `metric:${m}` }, fmtValue(k.metrics.find((x) => x.name === m)?.last_value)),
              ),
            ),
          ),
          kids.length ? null : h("tr", null, h("td.empty", { colspan: 4 }, "No child runs.")),
        ),
      ),
    );
  };
  void load();
  const reload = throttle(() => void load(), 300);
  const redraw = throttle(draw, 100);
  const isChild = (id: string | undefined) => !!id && kids.some((k) => k.id === id);
  const close = subscribe(
    `/api/v1/experiments/${run.experiment_id}/events`,
    (e: StreamEvent) => {
      if (e.type === "run_created" && e.parent_id === run.id) reload();
      else if (e.type === "run_updated" && isChild(e.run_id)) reload();
      else if (e.type === "points" && e.kind === "scalar" && isChild(e.run_id)) {
        // A new latest value is patched in place (the event carries it): no read per point.
        const k = kids.find((x) => x.id === e.run_id)!;
        const name = e.name as string;
        const m = k.metrics.find((x) => x.name === name);
        if (m) m.last_value = e.last_value;
        else k.metrics.push({ name, kind: "scalar", count: Number(e.count ?? 0), last_value: e.last_value });
        redraw();
      }
    },
    // A child created between the first read and the stream's start reached neither: read again once open.
    () => loadedOnce && reload(),
  );
  // Durations of active children tick in place.
  const ticker = window.setInterval(() => {
    for (const row of box.querySelectorAll<HTMLElement>('[data-testid="run-row"]')) {
      const k = kids.find((x) => x.id === row.dataset.runId);
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
