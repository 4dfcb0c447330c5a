// A run: header with live status, and tabs (overview, metrics, images, logs, artifacts, children), all fed
// live by the run's event stream.
import { check, Experiment, getJson, getRun, Run, SeriesInfo, StreamEvent, subscribeThenRead } from "../api";
import { Cleanup, rerender } from "../router";
import { duration, errorBox, fmtDuration, fmtTime, h, isActive, markPerf, resetPerf, setCrumbs, statusBadge, throttle } from "../util";
import { metricsTab } from "./metrics";
import { imagesTab } from "./images";
import { logsTab } from "./logs";
import { artifactsTab } from "./artifacts";
import { childrenTab } from "./children";

export interface TabCtx {
  run: Run;
  root: HTMLElement;
  query: URLSearchParams;
}

/** What a tab gives back: live event handling and cleanup. */
export interface TabHandle {
  onEvent?: (e: StreamEvent) => void;
  onRun?: (run: Run) => void;
  /** The stream opened only after the tab's first reads: read again what may have been missed in between. */
  resync?: () => void;
  destroy?: () => void;
}

const TABS = ["overview", "metrics", "images", "logs", "artifacts", "children"] as const;

export function runView(root: HTMLElement, params: string[], query: URLSearchParams): Cleanup {
  resetPerf();
  const id = params[0];
  const tab = (TABS as readonly string[]).includes(query.get("tab") ?? "") ? query.get("tab")! : "overview";
  let handle: TabHandle = {};
  let alive = true;
  let run: Run;
  const page = h("div.page");
  root.append(page);

  const statusSlot = h("span", { "data-testid": "run-status" });
  const timesSlot = h("span.muted");

  // The stream opens before the tab's first reads (subscribeThenRead): anything committed after it opened reaches
  // the page as an event, and the reads cover what came before; events that arrive before the tab exists are held
  // for it. If the stream is slow to open, the tab reads anyway and reads again (resync) once it is open. The run
  // itself is read at once: the tab's reads are what must start after the stream.
  const runRead = getRun(id);
  let onStreamEvent: (e: StreamEvent) => void = () => {};
  let cleanupLive = () => {};
  const closeEvents = subscribeThenRead(
    `/api/v1/runs/${id}/events`,
    (e) => onStreamEvent(e),
    () => show(),
    () => handle.resync?.(),
  );
  const closeStream = () => {
    closeEvents();
    cleanupLive();
  };

  const show = async () => {
    try {
      run = await runRead;
    } catch (e) {
      if (!alive) return;
      closeStream();
      page.append(errorBox(new Error(`Run ${id}: ${(e as Error).message}`), rerender));
      markPerf("charts-drawn");
      return;
    }
    if (!alive) return;

    // The breadcrumbs' experiment and parent names arrive while the tab loads: the tab's own reads (twenty
    // charts, say) must not wait two round trips for them.
    const crumbs = (exp: Experiment | null, parent: Run | null) =>
      setCrumbs(
        h("a", { href: "/" }, "Experiments"),
        h("a", { href: `/experiments/${run.experiment_id}` }, exp?.name ?? run.experiment_id),
        ...(parent ? [h("a", { href: `/runs/${parent.id}` }, parent.display_name || parent.id.slice(0, 8))] : []),
        run.display_name || run.id.slice(0, 8),
      );
    crumbs(null, null);
    void Promise.all([
      getJson<Experiment>(`/api/v1/experiments/${run.experiment_id}`).catch(() => null),
      run.parent_id ? getRun(run.parent_id).catch(() => null) : null,
    ]).then(([exp, parent]) => alive && crumbs(exp, parent));
    const header = () => {
      statusSlot.replaceChildren(statusBadge(run.status));
      timesSlot.textContent = `started ${fmtTime(run.start_time ?? run.created_time)} · ${fmtDuration(duration(run))}`;
    };
    header();
    const counts: Record<string, number> = {
      metrics: run.metrics.filter((m) => m.kind !== "image").length,
      images: run.metrics.filter((m) => m.kind === "image").length,
    };
    const tabs = h(
      "nav.tabs",
      null,
      TABS.map((t) =>
        h(
          "a",
          {
            href: `/runs/${id}${t === "overview" ? "" : `?tab=${t}`}`,
            class: t === tab ? "on" : "",
            "data-tab": t,
            "aria-label": t[0].toUpperCase() + t.slice(1),
          },
          t[0].toUpperCase() + t.slice(1),
          counts[t] ? h("span.count", null, String(counts[t])) : null,
        ),
      ),
    );
    const body = h("div.tab-body");
    const banner = h("div", { "data-testid": "run-deleted-slot" });
    // Restoring updates the page in place: a reload here raced whatever the user (or a test) opened next.
    const restored = () => {
      run.lifecycle = "active";
      showDeleted();
    };
    const showDeleted = () => banner.replaceChildren(...(run.lifecycle === "deleted" ? [deletedBanner(run, restored)] : []));
    showDeleted();
    page.append(
      banner,
      h(
        "div.run-head",
        null,
        h("h1", null, run.display_name || run.id),
        statusSlot,
        h("span.id", { title: "run id" }, run.id),
        h("div.spacer"),
        timesSlot,
      ),
      tabs,
      body,
    );
    const ctx: TabCtx = { run, root: body, query };
    switch (tab) {
      case "metrics":
        handle = metricsTab(ctx);
        break;
      case "images":
        handle = imagesTab(ctx);
        break;
      case "logs":
        handle = logsTab(ctx);
        break;
      case "artifacts":
        handle = artifactsTab(ctx);
        break;
      case "children":
        handle = childrenTab(ctx);
        break;
      default:
        handle = overviewTab(ctx);
        markPerf("charts-drawn");
    }
    // Live: status and details from run_updated (the run read again, throttled), data events passed to the tab.
    const ticker = window.setInterval(() => isActive(run.status) && header(), 1000);
    const refetch = throttle(async () => {
      const fresh = await getRun(id).catch(() => null);
      if (!fresh || !alive) return;
      Object.assign(run, fresh);
      header();
      showDeleted();
      handle.onRun?.(run);
    }, 150);
    onStreamEvent = (e) => {
      if (e.type === "run_updated") {
        if (typeof e.status === "string") {
          run.status = e.status;
          header();
        }
        refetch();
      }
      handle.onEvent?.(e);
    };
    cleanupLive = () => {
      clearInterval(ticker);
      refetch.cancel();
    };
  };

  return () => {
    alive = false;
    closeStream();
    handle.destroy?.();
  };
}

/** A deleted run (followed from an old link) says so: it is missing from its experiment's table. */
function deletedBanner(run: Run, restored: () => void): HTMLElement {
  const restore = h("button.btn.small", { "data-testid": "run-restore" }, "Restore");
  restore.addEventListener("click", async () => {
    restore.disabled = true;
    try {
      await check(
        await fetch(`/api/v1/runs/${run.id}`, {
          method: "PATCH",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ lifecycle: "active" }),
        }),
      );
      restored();
    } catch (e) {
      restore.disabled = false;
      restore.after(errorBox(e));
    }
  });
  return h(
    "div.errbox",
    { "data-testid": "run-deleted", role: "status" },
    h("strong", null, "This run is deleted. "),
    "It is not listed in its experiment and may be removed for good. ",
    restore,
  );
}

function field(name: string, label: string, value: Node | string | null | undefined): HTMLElement[] {
  if (value === null || value === undefined || value === "") return [];
  return [
    h("dt", null, label),
    h("dd", { "data-testid": "overview-field", "data-field": name }, value),
  ];
}

function kvTable(title: string, entries: [string, string][], testid?: string): HTMLElement {
  return h(
    "div.card.pad",
    testid ? { "data-testid": testid } : null,
    h("h3", null, title, " ", h("span.muted", null, `(${entries.length})`)),
    entries.length
      ? h("dl.kv", null, entries.map(([k, v]) => [h("dt.mono", null, k), h("dd.mono", null, v)]))
      : h("div.muted", null, "none"),
  );
}

function overviewTab({ run, root }: TabCtx): TabHandle {
  const draw = () => {
    const start = run.start_time ?? run.created_time;
    const git = run.properties["git.commit"] ?? run.tags["mlflow.source.git.commit"];
    const branch = run.properties["git.branch"] ?? run.tags["mlflow.source.git.branch"];
    const dirty = run.properties["git.dirty"];
    const details = h(
      "div.card.pad",
      null,
      h("h3", null, "Details"),
      h(
        "dl.kv",
        null,
        field("status", "Status", statusBadge(run.status)),
        field("run_id", "Run id", h("span.mono", null, run.id)),
        field("start_time", "Started", fmtTime(start)),
        field("end_time", "Ended", run.end_time ? fmtTime(run.end_time) : null),
        field("duration", "Duration", fmtDuration(duration(run))),
        field("user", "User", run.user),
        field("host", "Host", run.host || "—"),
        field("command", "Command", run.command ? h("code", null, run.command) : null),
        field("git_commit", "Git commit", git ? h("span.mono", null, git + (dirty === "true" ? " (dirty)" : "")) : null),
        field("git_branch", "Git branch", branch),
        field("parent", "Parent run", run.parent_id ? h("a.mono", { href: `/runs/${run.parent_id}` }, run.parent_id) : null),
        field("description", "Description", run.description || null),
      ),
    );
    const error = run.error
      ? h(
          "div.errbox",
          { "data-testid": "overview-field", "data-field": "error" },
          h("strong", null, "Error", run.error.code ? ` · ${run.error.code}` : ""),
          h("pre", null, run.error.message),
          run.error.details ? h("pre.muted", null, run.error.details) : null,
        )
      : null;
    const userTags = Object.entries(run.tags).filter(([k]) => !k.startsWith("mlflow."));
    root.replaceChildren(
      h(
        "div",
        { "data-testid": "run-overview" },
        error,
        h(
          "div.cols",
          { style: error ? "margin-top:14px" : "" },
          details,
          kvTable("Parameters", Object.entries(run.params)),
          kvTable("Tags", userTags),
          kvTable("Properties", Object.entries(run.properties)),
          metricsSummary(run.metrics),
        ),
      ),
    );
  };
  draw();
  return { onRun: draw };
}

function metricsSummary(metrics: SeriesInfo[]): HTMLElement {
  return h(
    "div.card.pad",
    null,
    h("h3", null, "Metrics ", h("span.muted", null, `(${metrics.length})`)),
    metrics.length
      ? h(
          "dl.kv",
          null,
          metrics.map((m) => [
            h("dt.mono", null, m.name),
            h("dd", null, m.kind === "scalar" ? String(m.last_value ?? "") : `${m.kind} · ${m.count} records`),
          ]),
        )
      : h("div.muted", null, "none"),
  );
}
