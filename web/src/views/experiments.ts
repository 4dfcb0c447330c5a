// The experiments list: name, run count, last activity; a search box filters by name (kept in the URL).
import { Experiment, listAll } from "../api";
import { navigate, setQuery } from "../router";
import { debounce, errorBox, fmtAgo, fmtTime, h, setCrumbs } from "../util";

export function experimentsView(root: HTMLElement, _p: string[], query: URLSearchParams): () => void {
  setCrumbs("Experiments");
  let all: Experiment[] = [];
  const search = h("input.search", {
    "data-testid": "experiments-search",
    type: "search",
    placeholder: "Search experiments…",
    value: query.get("q") ?? "",
  });
  const tbody = h("tbody");
  const count = h("span.muted");
  const table = h(
    "table.grid.experiments",
    { "data-testid": "experiments-table" },
    h("thead", null, h("tr", null, h("th", null, "Name"), h("th.num", null, "Runs"), h("th", null, "Last activity"), h("th", null, "Created"))),
    tbody,
  );
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const rows = all.filter((e) => !q || e.name.toLowerCase().includes(q));
    count.textContent = `${rows.length} of ${all.length}`;
    tbody.replaceChildren(
      ...rows.map((e) =>
        h(
          "tr",
          {
            "data-testid": "experiment-row",
            "data-experiment-id": e.id,
            style: "cursor:pointer",
            onclick: (ev: Event) => !(ev.target as Element).closest("a") && navigate(`/experiments/${e.id}`),
          },
          h("td", { "data-testid": "experiment-name" }, h("a", { href: `/experiments/${e.id}` }, e.name)),
          h("td.num", { "data-testid": "experiment-run-count" }, String(e.run_count ?? 0)),
          h("td", { title: fmtTime(e.last_activity) }, fmtAgo(e.last_activity)),
          h("td.muted", null, fmtTime(e.created_time)),
        ),
      ),
    );
    if (!rows.length) tbody.append(h("tr", null, h("td.empty", { colspan: 4 }, all.length ? "No experiment matches." : "No experiments yet.")));
  };
  search.addEventListener(
    "input",
    debounce(() => {
      setQuery({ q: search.value.trim() || null });
      draw();
    }, 80),
  );
  const errSlot = h("div");
  root.append(
    h("div.page", null, h("div.toolbar", null, h("h1", null, "Experiments"), count, h("div.spacer"), search), errSlot, h("div.card", null, table)),
  );
  let alive = true;
  // A failed read shows once (a failed reload replaces it), with a retry; the next good read clears it.
  const load = () =>
    listAll<Experiment>("/api/v1/experiments", new URLSearchParams({ limit: "1000" }))
      .then((items) => {
        if (!alive) return;
        errSlot.replaceChildren();
        all = items.sort((a, b) => (b.last_activity ?? b.created_time) - (a.last_activity ?? a.created_time));
        draw();
      })
      .catch((e) => alive && errSlot.replaceChildren(errorBox(e, () => void load())));
  load();
  // No timer: the list is read again when the tab comes back into view.
  const onVisible = () => document.visibilityState === "visible" && load();
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    alive = false;
    document.removeEventListener("visibilitychange", onVisible);
  };
}
