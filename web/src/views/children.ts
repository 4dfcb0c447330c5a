// The children tab: the run's child runs, with status, duration and their latest scalar metrics.
import { listAll, normalizeRun, Run, StreamEvent } from "../api";
import { debounce, fmtDuration, fmtTime, fmtValue, h, markPerf, statusBadge } from "../util";
import type { TabCtx, TabHandle } from "./run";

export function childrenTab({ run, root }: TabCtx): TabHandle {
  const box = h("div.card", { "data-testid": "child-runs" });
  root.append(box);
  const load = async () => {
    const kids = (await listAll<Run>("/api/v1/runs", new URLSearchParams({ parent_id: run.id, with_metrics: "true", limit: "1000" }))).map(normalizeRun);
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
              h("td", { "data-testid": "run-cell", "data-column": "duration" }, fmtDuration(k.end_time && k.start_time ? k.end_time - k.start_time : undefined)),
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
    markPerf("charts-drawn");
  };
  load();
  const reload = debounce(load, 300);
  return {
    onEvent(e: StreamEvent) {
      if (e.type === "run_created") reload();
    },
  };
}
