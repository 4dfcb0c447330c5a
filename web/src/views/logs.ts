// The logs tab: one stream at a time (select), search that keeps matching lines, live tail from the run's
// event stream (appended text arrives in the events; offsets keep it from repeating).
import { enc, getJson, LogStreamInfo, StreamEvent } from "../api";
import { setQuery } from "../router";
import { debounce, h, markPerf } from "../util";
import type { TabCtx, TabHandle } from "./run";

interface LogSlice {
  offset: number;
  next_offset: number;
  length: number;
  data: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function logsTab({ run, root, query }: TabCtx): TabHandle {
  const select = h("select", { "data-testid": "log-stream-select" });
  const search = h("input.search", { type: "search", "data-testid": "log-search", placeholder: "Search lines…", value: query.get("q") ?? "" });
  const follow = h("input", { type: "checkbox", checked: true });
  const info = h("span.muted");
  const box = h("div.logbox", { "data-testid": "log-view" });
  root.append(
    h(
      "div.page",
      { style: "gap:10px" },
      h("div.toolbar", null, h("span.muted", null, "Stream"), select, search, h("label.check", null, follow, "Follow"), h("div.spacer"), info),
      h("div.card", null, box),
    ),
  );
  let stream = query.get("stream") ?? "";
  let text = "";
  let next = 0; // byte offset of the end of what we hold
  let alive = true;
  let loading: Promise<void> | null = null;

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    if (!q) {
      box.textContent = text;
    } else {
      const lines = text.split("\n").filter((l) => l.toLowerCase().includes(q));
      box.replaceChildren(
        ...lines.flatMap((l) => {
          const out: (Node | string)[] = [];
          let i = 0;
          const low = l.toLowerCase();
          for (let at = low.indexOf(q); at >= 0; at = low.indexOf(q, i)) {
            out.push(l.slice(i, at), h("mark", null, l.slice(at, at + q.length)));
            i = at + q.length;
          }
          out.push(l.slice(i), "\n");
          return out;
        }),
      );
    }
    info.textContent = `${text.split("\n").length - (text.endsWith("\n") ? 1 : 0)} lines`;
    if (follow.checked) box.scrollTop = box.scrollHeight;
  };

  /** Reads the stream from `next` to its end (in 1 MiB slices). */
  const readMore = async () => {
    for (;;) {
      const s = await getJson<LogSlice>(`/api/v1/runs/${run.id}/logs/${enc(stream)}?offset=${next}`);
      if (!alive) return;
      if (s.offset !== next) return;
      text += s.data;
      next = s.next_offset;
      if (next >= s.length || !s.data) break;
    }
    draw();
  };

  const open = (name: string) => {
    stream = name;
    text = "";
    next = 0;
    box.textContent = "";
    loading = readMore().finally(() => (loading = null));
  };

  getJson<{ items: LogStreamInfo[] }>(`/api/v1/runs/${run.id}/logs`).then(({ items }) => {
    if (!alive) return;
    const names = items.map((i) => i.name);
    select.replaceChildren(...items.map((i) => h("option", { value: i.name }, `${i.name}`)));
    if (!names.length) {
      box.textContent = "No logs yet.";
      markPerf("charts-drawn");
      return;
    }
    if (!names.includes(stream)) stream = names.includes("stdout") ? "stdout" : names[0];
    select.value = stream;
    open(stream);
    loading?.then(() => markPerf("charts-drawn"));
  });
  select.addEventListener("change", () => {
    setQuery({ stream: select.value });
    open(select.value);
  });
  search.addEventListener(
    "input",
    debounce(() => {
      setQuery({ q: search.value.trim() || null });
      draw();
    }, 100),
  );

  return {
    onEvent(e: StreamEvent) {
      if (e.type !== "log_appended") return;
      const name = e.stream as string;
      if (![...select.options].some((o) => o.value === name)) {
        select.append(h("option", { value: name }, name));
        if (!stream) {
          select.value = name;
          open(name);
          return;
        }
      }
      if (name !== stream || loading) {
        if (name === stream) loading?.then(() => readMore());
        return;
      }
      const offset = Number(e.offset);
      const data = typeof e.data === "string" ? e.data : null;
      if (data === null || offset > next) {
        readMore();
        return;
      }
      const bytes = encoder.encode(data);
      const skip = next - offset;
      if (skip >= bytes.length) return; // already have it
      text += skip > 0 ? decoder.decode(bytes.subarray(skip)) : data;
      next = offset + bytes.length;
      draw();
    },
    destroy() {
      alive = false;
    },
  };
}
