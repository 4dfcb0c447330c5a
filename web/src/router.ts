// History-API routing: every view has a URL (deep links), back/forward re-render, links are intercepted, and
// MLflow UI links (`/#/experiments/1/runs/<id>`) are turned into the matching view's path.
import { portalPathForMlflowHash } from "./mlflow_links";
import { h, tryDecode } from "./util";

export type Cleanup = () => void;
export type View = (root: HTMLElement, params: string[], query: URLSearchParams) => Cleanup | void;

const routes: [RegExp, View][] = [];
let current: Cleanup | void;
let root: HTMLElement;
let lastPath = "";

export function route(pattern: RegExp, view: View): void {
  routes.push([pattern, view]);
}

export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

/** Renders the current view again from scratch (a retry), without reloading the page. */
export function rerender(): void {
  lastPath = "";
  render();
}

/** Changes the query of the current view without re-rendering it (filters, tabs kept in the URL). */
export function setQuery(update: Record<string, string | null>, push = false): void {
  const u = new URL(location.href);
  for (const [k, v] of Object.entries(update)) {
    if (v === null || v === "") u.searchParams.delete(k);
    else u.searchParams.set(k, v);
  }
  const s = u.pathname + u.search;
  if (push) history.pushState(null, "", s);
  else history.replaceState(null, "", s);
  lastPath = location.pathname + location.search;
}

export function render(): void {
  const key = location.pathname + location.search;
  if (key === lastPath) return;
  lastPath = key;
  if (current) current();
  current = undefined;
  root.innerHTML = "";
  const path = location.pathname.replace(/\/+$/, "") || "/";
  for (const [re, view] of routes) {
    const m = path.match(re);
    if (m) {
      // A malformed escape (`%E0%A4%A`) names nothing: "Not found" rather than a blank page and a URIError.
      const params = m.slice(1).map(tryDecode);
      if (params.some((p) => p === null)) break;
      current = view(root, params as string[], new URLSearchParams(location.search));
      return;
    }
  }
  root.append(h("div.page", { "data-testid": "not-found" }, h("h1", null, "Not found"), h("a", { href: "/" }, "Experiments")));
}

/** Replaces an MLflow UI hash link with the portal path it stands for; true when it did. */
function followMlflowHash(): boolean {
  const path = location.hash ? portalPathForMlflowHash(location.hash) : null;
  if (path) history.replaceState(null, "", path);
  return path !== null;
}

export function start(el: HTMLElement): void {
  root = el;
  window.addEventListener("popstate", () => render());
  window.addEventListener("hashchange", () => followMlflowHash() && render());
  followMlflowHash();
  document.addEventListener("click", (e) => {
    const a = (e.target as Element).closest?.("a");
    if (!a || a.target || a.hasAttribute("download") || e.defaultPrevented) return;
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const href = a.getAttribute("href");
    if (!href || !href.startsWith("/") || href.startsWith("/api/")) return;
    e.preventDefault();
    navigate(href);
  });
  render();
}
