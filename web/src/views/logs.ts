// The logs tab: one stream at a time (select), search that keeps matching lines, live tail from the run's
// event stream (appended text arrives in the events; offsets keep it from repeating). Only the tail of a long
// log is read (TAIL bytes); "Load earlier" reads further back a slice at a time. Live text is appended to the
// page as new text nodes: the text already shown is never laid out again.
import { enc, getJson, LogStreamInfo, StreamEvent } from "../api";
import { setQuery } from "../router";
import { debounce, errorBox, fmtBytes, h, markPerf, throttle } from "../util";
import type { TabCtx, TabHandle } from "./run";

interface LogSlice {
  offset: number;
  next_offset: number;
  length: number;
  data: string;
}

/** Bytes read when a stream opens (its end), and per "Load earlier" click. */
const TAIL = 2 * 1024 * 1024;
/** The server sends at most this much per read. */
const MAX_READ = 16 * 1024 * 1024;

const encoder = new TextEncoder();

/** Bytes of `s` as the server counted them; a U+FFFD the server put for an invalid byte counts as that byte. */
function byteLength(s: string): number {
  let n = encoder.encode(s).length;
  for (let i = s.indexOf("\uFFFD"); i >= 0; i = s.indexOf("\uFFFD", i + 1)) n -= 2;
  return n;
}

/** Lines in `s` (a last line without its newline counts). */
function countLines(s: string): number {
  let n = 0;
  for (let i = s.indexOf("\n"); i >= 0; i = s.indexOf("\n", i + 1)) n++;
  return n;
}

export function logsTab({ run, root, query }: TabCtx): TabHandle {
  const select = h("select", { "data-testid": "log-stream-select", "aria-label": "Log stream" });
  const search = h("input.search", { type: "search", "data-testid": "log-search", placeholder: "Search lines…", value: query.get("q") ?? "", "aria-label": "Search lines" });
  const follow = h("input", { type: "checkbox", checked: true });
  const info = h("span.muted", { "data-testid": "log-info" });
  const earlier = h("button.btn.small", { "data-testid": "log-load-earlier", hidden: true }, "Load earlier");
  const box = h("div.logbox", { "data-testid": "log-view" });
  const errSlot = h("div");
  root.append(
    h(
      "div.page",
      { style: "gap:10px" },
      h("div.toolbar", null, h("span.muted", null, "Stream"), select, search, h("label.check", null, follow, "Follow"), h("div.spacer"), earlier, info),
      errSlot,
      h("div.card", null, box),
    ),
  );
  let stream = query.get("stream") ?? "";
  let text = ""; // the bytes [front, next) of the stream, as text
  let lines = 0; // newlines in `text` (kept as chunks arrive: a live chunk does not rescan the window)
  let front = 0; // byte offset where the text held starts (a line start, except at a cut inside a long line)
  let next = 0; // byte offset of the end of what we hold
  let total = 0; // the stream's length when last read
  let gen = 0; // bumps when another stream opens: reads of the old one are dropped
  let alive = true;
  // Live events are ignored until the first listing is handled: it opens the stream at its tail and reads to its
  // end, which covers them. Before it, the page knows neither the stream nor where its tail starts, and an event
  // would read the log from byte 0.
  let listed = false;
  let reading: Promise<void> = Promise.resolve();

  const query_ = () => search.value.trim().toLowerCase();

  /** The held lines that match the search, with the matches marked. */
  const matching = (s: string, q: string): (Node | string)[] =>
    s
      .split("\n")
      .filter((l) => l.toLowerCase().includes(q))
      .flatMap((l) => {
        const out: (Node | string)[] = [];
        let i = 0;
        const low = l.toLowerCase();
        for (let at = low.indexOf(q); at >= 0; at = low.indexOf(q, i)) {
          out.push(l.slice(i, at), h("mark", null, l.slice(at, at + q.length)));
          i = at + q.length;
        }
        out.push(l.slice(i), "\n");
        return out;
      });

  const showInfo = () => {
    const shown = next - front;
    info.textContent = `${lines + (text && !text.endsWith("\n") ? 1 : 0)} lines` + (front > 0 ? ` · last ${fmtBytes(shown)} of ${fmtBytes(Math.max(total, next))}` : "");
    earlier.hidden = front === 0;
  };

  /** Everything again (a new stream, more history, a new search): the held window only. */
  const drawAll = () => {
    lines = countLines(text);
    const q = query_();
    if (!q) box.textContent = text;
    else box.replaceChildren(...matching(text, q));
    showInfo();
    if (follow.checked) box.scrollTop = box.scrollHeight;
  };

  // With a search, a live chunk may complete a line begun in the one before: matches are redrawn over the held
  // window, at most every 250 ms.
  const redrawSearch = throttle(drawAll, 250);

  /** New text at the end: appended as a node, nothing else touched. */
  const appendText = (chunk: string) => {
    if (!chunk) return;
    text += chunk;
    lines += countLines(chunk);
    if (query_()) redrawSearch();
    else {
      box.append(document.createTextNode(chunk));
      showInfo();
      if (follow.checked) box.scrollTop = box.scrollHeight;
    }
  };

  const slice = (offset: number, max: number) =>
    getJson<LogSlice>(`/api/v1/runs/${run.id}/logs/${enc(stream)}?offset=${offset}&max_bytes=${max}`);

  /** Reads the stream from `next` to its end, drawing each slice as it comes. Serialized: one read at a time. */
  const readMore = (): Promise<void> => {
    const mine = gen;
    reading = reading.then(async () => {
      for (;;) {
        if (!alive || mine !== gen) return;
        const s = await slice(next, MAX_READ);
        if (!alive || mine !== gen || s.offset !== next) return;
        total = s.length;
        next = s.next_offset;
        appendText(s.data);
        if (next >= s.length || !s.data) break;
      }
    }).catch((e) => {
      if (alive && mine === gen) errSlot.replaceChildren(errorBox(e, () => (errSlot.replaceChildren(), void readMore())));
    });
    return reading;
  };

  /** Opens a stream at its tail: the last TAIL bytes, cut to start at a line. */
  const open = (name: string, length: number) => {
    stream = name;
    gen++;
    text = "";
    lines = 0;
    box.textContent = "";
    errSlot.replaceChildren();
    total = length;
    const start = Math.max(0, length - TAIL);
    front = next = start;
    const mine = gen;
    reading = reading.then(async () => {
      if (start > 0) {
        const s = await slice(start, TAIL);
        if (mine !== gen || !alive) return;
        const cut = s.data.indexOf("\n");
        // The first line is most likely cut: start after it (unless the whole slice is one long line).
        const kept = cut >= 0 && cut < s.data.length - 1 ? s.data.slice(cut + 1) : s.data;
        front = s.next_offset - byteLength(kept);
        next = s.next_offset;
        total = s.length;
        text = kept;
        drawAll();
      }
    }).catch((e) => {
      if (alive && mine === gen) errSlot.replaceChildren(errorBox(e, () => open(name, length)));
    });
    return readMore().then(() => {
      if (mine === gen) drawAll();
    });
  };

  /** Reads the TAIL bytes before `front` and puts them ahead of the text held. */
  const loadEarlier = async () => {
    const mine = gen;
    const end = front;
    const start = Math.max(0, end - TAIL);
    earlier.disabled = true;
    try {
      const s = await slice(start, end - start);
      if (mine !== gen || front !== end) return;
      let kept = s.data;
      if (start > 0) {
        const cut = kept.indexOf("\n");
        if (cut >= 0) kept = kept.slice(cut + 1);
      }
      front = start > 0 ? s.next_offset - byteLength(kept) : 0;
      text = kept + text;
      const keepScroll = box.scrollHeight - box.scrollTop;
      const was = follow.checked;
      follow.checked = false;
      drawAll();
      follow.checked = was;
      box.scrollTop = box.scrollHeight - keepScroll;
    } catch (e) {
      errSlot.replaceChildren(errorBox(e, () => (errSlot.replaceChildren(), void loadEarlier())));
    } finally {
      earlier.disabled = false;
    }
  };
  earlier.addEventListener("click", () => void loadEarlier());

  let streams: LogStreamInfo[] = [];
  const list = () =>
    getJson<{ items: LogStreamInfo[] }>(`/api/v1/runs/${run.id}/logs`).then(
      ({ items }) => {
        if (!alive) return;
        streams = items;
        listed = true;
        const names = items.map((i) => i.name);
        select.replaceChildren(...items.map((i) => h("option", { value: i.name }, `${i.name}`)));
        if (!names.length) {
          box.textContent = "No logs yet.";
          markPerf("charts-drawn");
          return;
        }
        if (!names.includes(stream)) stream = names.includes("stdout") ? "stdout" : names[0];
        select.value = stream;
        open(stream, items.find((i) => i.name === stream)!.length).then(() => markPerf("charts-drawn"));
      },
      (e) => alive && errSlot.replaceChildren(errorBox(e, () => (errSlot.replaceChildren(), void list()))),
    );
  void list();
  select.addEventListener("change", () => {
    setQuery({ stream: select.value });
    open(select.value, streams.find((i) => i.name === select.value)?.length ?? 0);
  });
  search.addEventListener(
    "input",
    debounce(() => {
      setQuery({ q: search.value.trim() || null });
      drawAll();
    }, 100),
  );

  return {
    onEvent(e: StreamEvent) {
      if (e.type !== "log_appended" || !listed) return;
      const name = e.stream as string;
      const offset = Number(e.offset);
      const length = Number(e.length);
      if (![...select.options].some((o) => o.value === name)) {
        select.append(h("option", { value: name }, name));
        streams.push({ name, length: offset + length });
        if (!stream || box.textContent === "No logs yet.") {
          select.value = name;
          box.textContent = "";
          open(name, 0);
          return;
        }
      }
      if (name !== stream) return;
      total = Math.max(total, offset + length);
      const data = typeof e.data === "string" ? e.data : null;
      // The event's text is used when it is exactly the bytes it announces and starts where the page is; the
      // byte cursor moves by the event's length, not by the text re-encoded (an invalid byte arrives as a
      // 3-byte U+FFFD, a character split by the append is held back). Otherwise read from the cursor.
      const exact = data !== null && encoder.encode(data).length === length;
      if (!exact || offset !== next) {
        if (offset + length > next) void readMore();
        return;
      }
      const mine = gen;
      reading = reading.then(() => {
        if (mine !== gen || offset !== next) {
          if (mine === gen && offset + length > next) void readMore();
          return;
        }
        next = offset + length;
        appendText(data!);
      });
    },
    resync() {
      // Before the listing is handled, its tail read comes after the stream opened anyway.
      if (listed) void readMore();
    },
    destroy() {
      alive = false;
      redrawSearch.cancel();
    },
  };
}
