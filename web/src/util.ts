// Small DOM and formatting helpers shared by every view (no framework: the views build DOM directly).

type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;
type Child = Node | string | number | null | undefined | false | Child[];

/** Creates an element: `h("div.card", {onclick: f, "data-testid": "x"}, children...)`. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K | `${K}.${string}` | `${K}#${string}`,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const [head, ...classes] = tag.split(".");
  const [name, id] = head.split("#");
  const el = document.createElement(name as K);
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(" ");
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (k === "class") {
        el.className = [el.className, String(v)].filter(Boolean).join(" ");
      } else if (k === "value" && "value" in el) {
        (el as HTMLInputElement).value = String(v);
      } else if (k === "checked") {
        (el as HTMLInputElement).checked = Boolean(v);
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** Microseconds since the epoch → local date and time. */
export function fmtTime(us: number | null | undefined): string {
  if (us === null || us === undefined) return "—";
  const d = new Date(us / 1000);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A duration in microseconds as "1h 02m", "3m 05s", "4.2s", "120ms". */
export function fmtDuration(us: number | null | undefined): string {
  if (us === null || us === undefined || !isFinite(us)) return "—";
  const s = us / 1e6;
  if (s < 1) return `${Math.round(us / 1000)}ms`;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function fmtAgo(us: number | null | undefined): string {
  if (us === null || us === undefined) return "—";
  const s = (Date.now() * 1000 - us) / 1e6;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A metric value as shown in tables: up to 6 significant digits, NaN/Infinity spelled out. */
export function fmtValue(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(4);
    return String(Number(v.toPrecision(6)));
  }
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** Numeric value of a JSON number or one of the non-finite spellings. */
export function num(v: unknown): number {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  if (typeof v === "string" && v.trim() !== "" && !isNaN(Number(v))) return Number(v);
  return NaN;
}

/** Marks a performance milestone once and mirrors it on `window.__flightlog` (see docs/portal.md). */
export function markPerf(name: "charts-drawn" | "runs-table-ready"): void {
  const w = window as unknown as { __flightlog: { chartsDrawn: boolean; runsTableReady: boolean } };
  const key = name === "charts-drawn" ? "chartsDrawn" : "runsTableReady";
  if (w.__flightlog[key]) return;
  w.__flightlog[key] = true;
  performance.mark(`flightlog:${name}`);
}

/** Clears the flags when a new view starts, so each navigation is measured on its own. */
export function resetPerf(): void {
  const w = window as unknown as { __flightlog: { chartsDrawn: boolean; runsTableReady: boolean } };
  w.__flightlog = { chartsDrawn: false, runsTableReady: false };
}

export const STATUS_CLASS: Record<string, string> = {
  Running: "running",
  Completed: "ok",
  Failed: "failed",
  Canceled: "canceled",
  CancelRequested: "canceled",
  Queued: "queued",
  Preparing: "queued",
  NotStarted: "queued",
  Finalizing: "running",
};

export function statusBadge(status: string): HTMLElement {
  return h("span.badge", { class: `st-${STATUS_CLASS[status] ?? "queued"}` }, status);
}

export function isActive(status: string): boolean {
  return !["Completed", "Failed", "Canceled"].includes(status);
}

/** Runs `f` once input stops for `ms` (typing in a search box). Not for live refreshes: see `throttle`. */
export function debounce<A extends unknown[]>(f: (...a: A) => void, ms: number): (...a: A) => void {
  let t: number | undefined;
  return (...a: A) => {
    clearTimeout(t);
    t = window.setTimeout(() => f(...a), ms);
  };
}

export type Throttled = (() => void) & { cancel: () => void };

/**
 * Runs `f` at most once every `ms`, and always once after the last call (with nothing lost: a call while a run
 * is pending joins it). For live refreshes: a debounce would never run while events keep arriving faster than
 * its delay, and a busy run's stream does exactly that. When `f` returns a promise (a read), calls made while it
 * is pending join one more run after it, and the interval counts from when it settles: a read slower than `ms`
 * is never overtaken (and thrown away) by the next one.
 */
export function throttle(f: () => unknown, ms: number): Throttled {
  let last = -Infinity;
  let t: number | undefined;
  let running = false;
  let again = false;
  const settled = () => {
    running = false;
    last = performance.now();
    if (again) {
      again = false;
      call();
    }
  };
  const run = () => {
    t = undefined;
    running = true;
    let r: unknown;
    try {
      r = f();
    } catch (e) {
      settled();
      throw e;
    }
    if (r instanceof Promise) r.then(settled, settled);
    else settled();
  };
  const call = () => {
    if (running) again = true;
    else if (t === undefined) t = window.setTimeout(run, Math.max(0, last + ms - performance.now()));
  };
  return Object.assign(call, {
    cancel: () => {
      clearTimeout(t);
      t = undefined;
      again = false;
    },
  });
}

/** A run's duration in µs: to its end, or to now while it is active; undefined for an ended run without an end. */
export function duration(r: { start_time?: number; created_time: number; end_time?: number; status: string }): number | undefined {
  const start = r.start_time ?? r.created_time;
  const end = r.end_time ?? (isActive(r.status) ? Date.now() * 1000 : undefined);
  return end === undefined ? undefined : end - start;
}

/**
 * A failed read shown where its data would be: the message, and a retry button when there is something to
 * retry. Every view shows load errors this way (`data-testid="load-error"`, the button `load-retry`).
 */
export function errorBox(e: unknown, retry?: () => void): HTMLElement {
  const msg = e instanceof Error ? e.message || e.name : String(e);
  return h(
    "div.error.load-error",
    { "data-testid": "load-error", role: "alert" },
    h("span", null, `Could not load: ${msg}`),
    retry ? h("button.btn.small", { "data-testid": "load-retry", onclick: () => retry() }, "Retry") : null,
  );
}

/** `decodeURIComponent` that gives null for a malformed escape (a hand-edited URL) instead of throwing. */
export function tryDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** Replaces the breadcrumb trail in the header. */
export function setCrumbs(...items: (Node | string)[]): void {
  const nav = document.getElementById("crumbs");
  if (!nav) return;
  clear(nav);
  items.forEach((it, i) => {
    if (i > 0) nav.appendChild(h("span.sep", null, "/"));
    nav.appendChild(typeof it === "string" ? h("span", null, it) : it);
  });
}
