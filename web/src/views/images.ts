// The images tab: every image metric at the chosen step (a slider over the union of logged steps), the
// latest image at or before that step for each name.
import { enc, Record_, StreamEvent } from "../api";
import { setQuery } from "../router";
import { debounce, errorBox, fmtTime, h, markPerf } from "../util";
import { recordFeed, RecordFeed } from "./feed";
import type { TabCtx, TabHandle } from "./run";

export interface ImageSeries {
  runId: string;
  runLabel?: string;
  name: string;
  records: Record_[];
}

/** The artifact URL of an image record (`{"path", "media_type"}`). */
export function imageUrl(runId: string, r: Record_): string {
  const path = (r.value as { path?: string })?.path ?? "";
  return `/api/v1/runs/${runId}/artifacts/${path.split("/").map(enc).join("/")}`;
}

/** The record shown at `step`: the last one at or before it (or the first if none is). */
export function atStep(recs: Record_[], step: number): Record_ | undefined {
  let best: Record_ | undefined;
  for (const r of recs) if (r.step <= step && (!best || r.step >= best.step)) best = r;
  return best ?? recs[0];
}

export function figure(s: ImageSeries, r: Record_ | undefined, caption: string): HTMLElement {
  return h(
    "figure",
    null,
    r
      ? h("a", { href: imageUrl(s.runId, r), target: "_blank" }, h("img", {
          "data-testid": "gallery-image",
          "data-image-name": s.name,
          "data-step": String(r.step),
          "data-run-id": s.runId,
          src: imageUrl(s.runId, r),
          alt: `${s.name} at step ${r.step}`,
        }))
      : h("div.muted", null, "no image at this step"),
    h("figcaption", null, h("span", null, caption), h("span", { title: r ? fmtTime(r.time) : "" }, r ? `step ${r.step}` : "")),
  );
}

/** A gallery with one step slider over the union of steps; `render` lays the figures out. */
export function gallery(
  series: ImageSeries[],
  initialStep: number | null,
  render: (step: number) => HTMLElement,
): { el: HTMLElement; update: () => void } {
  const slider = h("input", { type: "range", "data-testid": "image-step-slider", min: 0, max: 0, value: 0, step: 1 });
  const label = h("span.mono");
  const grid = h("div");
  const el = h("div", { "data-testid": "image-gallery", style: "display:flex;flex-direction:column;gap:12px" },
    h("div.slider.card.pad", null, h("strong", null, "Step"), slider, label), grid);
  let steps: number[] = [];
  let following = initialStep === null;
  const draw = () => {
    const step = steps[Number(slider.value)] ?? 0;
    label.textContent = steps.length ? `${step}  (${Number(slider.value) + 1} of ${steps.length})` : "no images";
    grid.replaceChildren(render(step));
  };
  const persist = debounce(() => setQuery({ step: following ? null : String(steps[Number(slider.value)]) }), 150);
  slider.addEventListener("input", () => {
    following = Number(slider.value) === steps.length - 1;
    draw();
    persist();
  });
  const update = () => {
    steps = [...new Set(series.flatMap((s) => s.records.map((r) => r.step)))].sort((a, b) => a - b);
    slider.max = String(Math.max(0, steps.length - 1));
    let idx = steps.length - 1;
    if (!following && initialStep !== null) {
      const want = initialStep;
      const at = steps.findIndex((s) => s >= want);
      idx = at < 0 ? steps.length - 1 : at;
      initialStep = null;
    } else if (!following) {
      idx = Number(slider.value);
    }
    slider.value = String(Math.max(0, idx));
    slider.disabled = steps.length <= 1;
    draw();
  };
  return { el, update };
}

/**
 * Feeds image series from their record feeds (the run stream carries the records: they are appended, not read
 * again); `update` redraws the gallery. A failed read shows in `errSlot`, whose retry reads the failed series again.
 */
export function imageFeeds(errSlot: HTMLElement, update: () => void): { feed: (s: ImageSeries, count?: number) => RecordFeed } {
  const failed = new Set<() => void>();
  const retryAll = () => {
    errSlot.replaceChildren();
    const retries = [...failed];
    failed.clear();
    retries.forEach((r) => r());
  };
  const fail = (e: unknown, retry: () => void) => {
    failed.add(retry);
    errSlot.replaceChildren(errorBox(e, retryAll));
  };
  return {
    feed: (s, count = 0) =>
      recordFeed(s.runId, { name: s.name, count }, null, (recs) => {
        s.records = recs;
        update();
      }, fail),
  };
}

export function imagesTab({ run, root, query }: TabCtx): TabHandle {
  const names = run.metrics.filter((m) => m.kind === "image").map((m) => m.name);
  const series: ImageSeries[] = names.map((name) => ({ runId: run.id, name, records: [] }));
  const stepQ = query.get("step");
  const g = gallery(series, stepQ === null ? null : Number(stepQ), (step) =>
    h("div.gallery", null, series.map((s) => figure(s, atStep(s.records, step), s.name))),
  );
  root.append(g.el);
  const errSlot = h("div");
  root.prepend(errSlot);
  const empty = series.length ? null : h("div.card.pad.muted", null, "No images logged yet.");
  if (empty) root.append(empty);
  const { feed } = imageFeeds(errSlot, () => {
    empty?.remove(); // the run's first image may arrive live
    g.update();
  });
  const feeds = new Map<string, RecordFeed>(series.map((s) => [s.name, feed(s)]));
  void Promise.all([...feeds.values()].map((f) => f.start())).then(() => {
    g.update();
    markPerf("charts-drawn");
  });
  return {
    onEvent(e: StreamEvent) {
      if (e.type !== "points" || e.kind !== "image") return;
      const name = e.name as string;
      let f = feeds.get(name);
      if (!f) {
        // A series born while the tab is open: its records come with the event (or it is read).
        const s: ImageSeries = { runId: run.id, name, records: [] };
        series.push(s);
        feeds.set(name, (f = feed(s)));
      }
      f.onRecords(Number(e.from_index ?? 0), Number(e.count ?? 0), Array.isArray(e.records) ? (e.records as Record_[]) : null);
    },
    resync() {
      feeds.forEach((f) => f.reread());
    },
    destroy: () => feeds.forEach((f) => f.cancel()),
  };
}
