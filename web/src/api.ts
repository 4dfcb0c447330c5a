// The native API (docs/api.md) as typed fetch helpers, plus the SSE streams.

export interface SeriesInfo {
  name: string;
  kind: "scalar" | "text" | "list" | "row" | "table" | "image" | "json" | "histogram";
  description?: string;
  count: number;
  first_time?: number;
  last_time?: number;
  last_step?: number;
  last_value?: unknown;
  min?: number | string;
  max?: number | string;
  schema?: string;
  columns?: string[];
}

export interface Experiment {
  id: string;
  name: string;
  created_time: number;
  last_update_time: number;
  lifecycle: string;
  tags: Record<string, string>;
  run_count: number;
  last_activity?: number;
}

export interface Run {
  id: string;
  experiment_id: string;
  display_name: string;
  description?: string;
  parent_id?: string;
  status: string;
  lifecycle: string;
  created_time: number;
  start_time?: number;
  end_time?: number;
  error?: { message: string; code?: string; details?: string };
  tags: Record<string, string>;
  properties: Record<string, string>;
  params: Record<string, string>;
  user: string;
  host: string;
  command?: string;
  metrics: SeriesInfo[];
}

export interface Record_ {
  index: number;
  step: number;
  time: number;
  value: unknown;
}

export interface Scalars {
  steps: Float64Array;
  times: Float64Array;
  values: Float64Array;
}

/** A scalar read: the points sent, and how many points the series held when it was read. */
export interface ScalarRead extends Scalars {
  /**
   * The series' length at the read (`X-Series-Count`): a downsampled answer stands for points `[0, total)`, and
   * the first point logged after it has index `total`.
   */
  total: number;
}

export interface ArtifactInfo {
  path: string;
  is_dir: boolean;
  size?: number;
  modified_time?: number;
}

export interface LogStreamInfo {
  name: string;
  length: number;
  last_time?: number;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The response if it is a success; otherwise an ApiError with the server's code and message. */
export async function check(r: Response): Promise<Response> {
  if (r.ok) return r;
  let code = "HTTP_" + r.status;
  let message = r.statusText;
  try {
    const body = await r.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    /* not JSON */
  }
  throw new ApiError(r.status, code, message);
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const r = await check(await fetch(path, { signal, headers: { Accept: "application/json" } }));
  return r.json() as Promise<T>;
}

export const enc = encodeURIComponent;

/**
 * A metric name in a URL path, as ONE segment ('/' sent as %2F, which the server's wildcard route decodes). Kept
 * as separate segments, `.` and `..` in a name (`eval/../loss`) would be resolved away by the browser's URL
 * parser and another series read.
 */
export function metricPath(name: string): string {
  return enc(name);
}

export async function listAll<T>(path: string, params: URLSearchParams): Promise<T[]> {
  const out: T[] = [];
  let token: string | undefined;
  do {
    if (token) params.set("page_token", token);
    const page = await getJson<{ items: T[]; next_page_token?: string }>(`${path}?${params}`);
    out.push(...page.items);
    token = page.next_page_token;
  } while (token);
  return out;
}

/**
 * Scalar read in the binary format: u64 count, then steps (i64), times (i64 µs), values (f64); plus the series'
 * length from the `X-Series-Count` header (docs/api.md). A server without the header: the end of what an
 * unbounded read got (exact for a read that was not downsampled).
 */
export async function readScalars(
  runId: string,
  name: string,
  opts: { buckets?: number; minStep?: number; maxStep?: number; startIndex?: number },
  signal?: AbortSignal,
): Promise<ScalarRead> {
  const q = new URLSearchParams({ format: "binary" });
  if (opts.buckets) q.set("buckets", String(Math.max(1, Math.round(opts.buckets))));
  if (opts.minStep !== undefined) q.set("min_step", String(Math.floor(opts.minStep)));
  if (opts.maxStep !== undefined) q.set("max_step", String(Math.ceil(opts.maxStep)));
  if (opts.startIndex) q.set("start_index", String(opts.startIndex));
  const r = await check(
    await fetch(`/api/v1/runs/${runId}/metrics/${metricPath(name)}?${q}`, { signal }),
  );
  const got = decodeScalars(await r.arrayBuffer());
  const header = r.headers.get("x-series-count");
  const total = header !== null && header !== "" && isFinite(Number(header)) ? Number(header) : (opts.startIndex ?? 0) + got.steps.length;
  return { ...got, total };
}

export function decodeScalars(buf: ArrayBuffer): Scalars {
  const dv = new DataView(buf);
  const n = Number(dv.getBigUint64(0, true));
  const steps = new Float64Array(n);
  const times = new Float64Array(n);
  const values = new Float64Array(n);
  const b64 = new BigInt64Array(buf, 8, n * 2);
  for (let i = 0; i < n; i++) {
    steps[i] = Number(b64[i]);
    times[i] = Number(b64[n + i]);
  }
  values.set(new Float64Array(buf, 8 + 16 * n, n));
  return { steps, times, values };
}

export async function readRecords(runId: string, name: string, q = ""): Promise<Record_[]> {
  const r = await getJson<{ records: Record_[] }>(
    `/api/v1/runs/${runId}/metrics/${metricPath(name)}${q ? "?" + q : ""}`,
  );
  return r.records;
}

export interface StreamEvent {
  seq: number;
  type: string;
  run_id?: string;
  experiment_id: string;
  [k: string]: unknown;
}

/**
 * Opens an SSE stream; returns a closer. EventSource reconnects itself and resumes with Last-Event-ID (the server
 * opens every stream with an `id:`, so there always is one). `onOpen` runs when the connection is up: from then
 * on, everything committed reaches `onEvent` (the server starts a new stream at the newest event when it opens).
 */
export function subscribe(path: string, onEvent: (e: StreamEvent) => void, onOpen?: () => void): () => void {
  const es = new EventSource(path);
  if (onOpen) es.addEventListener("open", () => onOpen());
  const types = [
    "run_created",
    "run_updated",
    "points",
    "log_appended",
    "artifact_written",
    "artifact_deleted",
  ];
  const handler = (m: MessageEvent) => {
    try {
      onEvent(JSON.parse(m.data));
    } catch {
      /* ignore malformed */
    }
  };
  for (const t of types) es.addEventListener(t, handler as EventListener);
  return () => es.close();
}

/** How long a view's first read waits for its event stream to open (a proxy may hold it back, or buffer it). */
export const STREAM_WAIT_MS = 1000;

/**
 * Opens the event streams, then does a view's first read: when all are open, or after `waitMs`, whichever comes
 * first. The server starts a new stream at its newest event, so everything committed after the streams opened
 * reaches `onEvent`, and the read covers what came before. If the read ran before the streams opened, `reread`
 * runs once they are open (what was committed in between reached neither). Events are held until `read` (and
 * the promise it returns) is done, then passed on in order: the view exists by then. Returns the closer.
 */
export function subscribeThenRead(
  paths: string | string[],
  onEvent: (e: StreamEvent) => void,
  read: () => unknown,
  reread: () => unknown = read,
  waitMs = STREAM_WAIT_MS,
): () => void {
  const list = Array.isArray(paths) ? paths : [paths];
  let toOpen = list.length;
  let called = false;
  let ready = false;
  let closed = false;
  const held: StreamEvent[] = [];
  const flush = () => {
    ready = true;
    if (!closed) held.splice(0).forEach(onEvent);
  };
  const start = () => {
    if (called || closed) return;
    called = true;
    clearTimeout(timer);
    let r: unknown;
    try {
      r = read();
    } finally {
      if (r instanceof Promise) r.then(flush, flush);
      else flush();
    }
  };
  const timer = window.setTimeout(start, waitMs);
  const closers = list.map((path) => {
    let opened = false;
    return subscribe(
      path,
      (e) => (ready ? onEvent(e) : held.push(e)),
      () => {
        if (opened) return; // a reconnect: the stream resumes after the last event it delivered
        opened = true;
        if (--toOpen > 0 || closed) return;
        if (called) void reread();
        else start();
      },
    );
  });
  if (!list.length) start();
  return () => {
    closed = true;
    clearTimeout(timer);
    closers.forEach((c) => c());
  };
}

/** Empty maps and lists are left out of the JSON; views rely on them being there. */
export function normalizeRun(r: Run): Run {
  r.metrics ??= [];
  r.params ??= {};
  r.tags ??= {};
  r.properties ??= {};
  return r;
}

export async function getRun(id: string): Promise<Run> {
  return normalizeRun(await getJson<Run>(`/api/v1/runs/${id}`));
}
