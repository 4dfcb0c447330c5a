// The records of a non-scalar series (text, list, rows, tables, JSON, histograms, images), kept up to date from
// the run's event stream, which carries them: shared by the metrics tab's cards, the images tab and compare.
import { readRecords, Record_ } from "../api";
import { throttle } from "../util";

export interface RecordFeed {
  /** The first read (and drawing); its promise settles when it is drawn or failed. */
  start: () => Promise<void>;
  /** Whether `start` was called. */
  readonly started: boolean;
  /** Live records, points `[from, from + count)`; `recs` null when the event had none (then the series is read). */
  onRecords: (from: number, count: number, recs: Record_[] | null) => void;
  /** Reads the series again (points may have been missed: a late stream, a gap). */
  reread: () => void;
  /** Stops drawing and reading (the view is gone). */
  cancel: () => void;
}

type Batch = [from: number, count: number, recs: Record_[] | null];

/**
 * The whole series, or only its last `keep` records (a text card shows 500, a list or JSON card its latest). Live
 * records are appended by index; a read happens at first, after a gap, or when an event came without records.
 * Events that arrive during a read are held and appended after it. `draw` runs at most every 150 ms while
 * records stream in; a failed read goes to `fail` with its retry.
 */
export function recordFeed(
  runId: string,
  info: { name: string; count: number },
  keep: number | null,
  draw: (recs: Record_[], total: number) => void,
  fail: (e: unknown, retry: () => void) => void,
): RecordFeed {
  let recs: Record_[] = [];
  let total = 0; // series index after the last record held
  let seq = 0;
  let started = false;
  let cancelled = false;
  let reading = 0;
  let held: Batch[] = [];
  const redraw = throttle(() => !cancelled && draw(recs, total), 150);
  /** Appends a batch after what is held; false when it cannot be (no records in it, or points missed). */
  const append = ([from, count, got]: Batch): boolean => {
    if (!got || from > total) return false;
    const fresh = got.filter((r) => r.index >= total);
    if (!fresh.length) return true;
    if (fresh[0].index !== total) return false;
    recs.push(...fresh);
    if (keep !== null && recs.length > keep) recs = recs.slice(-keep);
    total = Math.max(total, from + count, fresh[fresh.length - 1].index + 1);
    return true;
  };
  const read = async (): Promise<void> => {
    started = true;
    const mine = ++seq;
    reading++;
    const from = keep === null ? 0 : Math.max(0, info.count - keep);
    try {
      const got = await readRecords(runId, info.name, from ? `start_index=${from}` : "");
      if (mine !== seq || cancelled) return;
      recs = keep === null ? got : got.slice(-keep);
      total = got.length ? got[got.length - 1].index + 1 : from;
      // What arrived while reading goes after it (or, past a hole, reads again).
      const missed = !held.splice(0).every(append);
      info.count = Math.max(info.count, total);
      redraw.cancel();
      draw(recs, total);
      if (missed) reread();
    } catch (e) {
      if (mine === seq && !cancelled) fail(e, () => void read());
    } finally {
      reading--;
    }
  };
  const reread = throttle(read, 300);
  return {
    start: read,
    get started() {
      return started;
    },
    onRecords(from, count, got) {
      if (cancelled) return;
      if (reading) {
        held.push([from, count, got]);
        return;
      }
      if (!append([from, count, got])) return reread();
      info.count = Math.max(info.count, total);
      redraw();
    },
    reread,
    cancel() {
      cancelled = true;
      redraw.cancel();
      reread.cancel();
    },
  };
}
