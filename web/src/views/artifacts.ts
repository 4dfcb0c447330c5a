// The artifacts tab: the run's files as a tree (folders fold), a preview of text, JSON and images, download.
import { ArtifactInfo, check, enc, getJson, StreamEvent } from "../api";
import { setQuery } from "../router";
import { errorBox, fmtBytes, h, markPerf, throttle } from "../util";
import type { TabCtx, TabHandle } from "./run";

const TEXT = /\.(txt|log|md|py|ya?ml|toml|cfg|ini|csv|tsv|sh|js|ts|rs|html|xml|out|err|jsonl)$/i;
const IMAGE = /\.(png|jpe?g|gif|svg|webp|bmp)$/i;
const PREVIEW_MAX = 2 * 1024 * 1024;

export function artifactsTab({ run, root, query }: TabCtx): TabHandle {
  const list = h("ul.alist", { "data-testid": "artifact-list", role: "tree", "aria-label": "Artifacts" });
  const preview = h("div.preview", { "data-testid": "artifact-preview" }, h("div.muted", null, "Select a file to preview it."));
  root.append(h("div.split", null, h("div.card", null, list), h("div.card", null, preview)));
  let items: ArtifactInfo[] = [];
  const collapsed = new Set<string>();
  let selected = query.get("path") ?? "";
  const url = (p: string) => `/api/v1/runs/${run.id}/artifacts/${p.split("/").map(enc).join("/")}`;

  const draw = () => {
    const files = items.filter((i) => !i.is_dir);
    const dirs = new Set<string>();
    for (const f of files) {
      const parts = f.path.split("/");
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    }
    const entries = [...[...dirs].map((d) => ({ path: d, dir: true, size: undefined as number | undefined })), ...files.map((f) => ({ path: f.path, dir: false, size: f.size }))].sort(
      (a, b) => a.path.localeCompare(b.path),
    );
    const hidden = (p: string) => [...collapsed].some((c) => p.startsWith(c + "/"));
    list.replaceChildren(
      ...entries
        .filter((e) => !hidden(e.path))
        .map((e) => {
          const depth = e.path.split("/").length - 1;
          const name = e.path.split("/").pop()!;
          const activate = () => {
            if (e.dir) {
              if (collapsed.has(e.path)) collapsed.delete(e.path);
              else collapsed.add(e.path);
              draw();
              list.querySelector<HTMLElement>(`[data-path="${CSS.escape(e.path + "/")}"]`)?.focus();
            } else void show(e.path, e.size);
          };
          // Items are focusable and open with Enter or Space: the tree works from the keyboard.
          return h(
            "li",
            {
              "data-testid": "artifact-item",
              "data-path": e.dir ? e.path + "/" : e.path,
              class: e.path === selected ? "on" : "",
              style: `padding-left:${14 + depth * 16}px`,
              role: "treeitem",
              tabindex: 0,
              "aria-level": depth + 1,
              "aria-expanded": e.dir ? String(!collapsed.has(e.path)) : null,
              "aria-selected": e.dir ? null : String(e.path === selected),
              onclick: activate,
              onkeydown: (ev: Event) => {
                const k = (ev as KeyboardEvent).key;
                if (k !== "Enter" && k !== " ") return;
                ev.preventDefault();
                activate();
              },
            },
            h("span.muted", { style: "width:12px" }, e.dir ? (collapsed.has(e.path) ? "▸" : "▾") : ""),
            h(e.dir ? "strong" : "span", null, e.dir ? name + "/" : name),
            h("span.size", null, e.dir ? "" : fmtBytes(e.size)),
          );
        }),
    );
    if (!entries.length) list.append(h("li.muted", null, "No artifacts."));
  };

  const show = async (path: string, size?: number) => {
    selected = path;
    setQuery({ path });
    draw();
    const head = h(
      "div.toolbar",
      { style: "margin-bottom:10px" },
      h("strong.mono", null, path),
      h("span.muted", null, fmtBytes(size)),
      h("div.spacer"),
      h("a.btn.small", { href: url(path), download: path.split("/").pop() }, "Download"),
    );
    preview.replaceChildren(head, h("div.muted", null, "loading…"));
    let body: Node;
    if (IMAGE.test(path)) {
      body = h("img", { src: url(path), alt: path });
    } else if ((size ?? 0) > PREVIEW_MAX) {
      body = h("div.muted", null, "Too large to preview; download it instead.");
    } else {
      let buf: Uint8Array;
      try {
        // Through check(): an error answer (the file deleted since the listing) is an error, not its content.
        buf = new Uint8Array(await (await check(await fetch(url(path)))).arrayBuffer());
      } catch (e) {
        if (selected === path) preview.replaceChildren(head, errorBox(e, () => void show(path, size)));
        return;
      }
      const text = new TextDecoder().decode(buf);
      if (/\.json$/i.test(path)) {
        try {
          body = h("pre", null, JSON.stringify(JSON.parse(text), null, 2));
        } catch {
          body = h("pre", null, text);
        }
      } else if (TEXT.test(path) || !buf.slice(0, 4096).includes(0)) {
        body = h("pre", null, text);
      } else {
        body = h("div.muted", null, "Binary file; download it to open it.");
      }
    }
    if (selected === path) preview.replaceChildren(head, body);
  };

  const load = () =>
    getJson<{ items: ArtifactInfo[] }>(`/api/v1/runs/${run.id}/artifacts?recursive=true`).then(
      (r) => {
        items = r.items;
        draw();
        markPerf("charts-drawn");
        const sel = items.find((i) => i.path === selected && !i.is_dir);
        if (sel && preview.querySelector(".muted")) show(sel.path, sel.size);
      },
      (e) => list.replaceChildren(h("li", null, errorBox(e, () => void load()))),
    );
  void load();
  const reload = throttle(load, 300);
  return {
    onEvent(e: StreamEvent) {
      if (e.type === "artifact_written" || e.type === "artifact_deleted") reload();
    },
    resync: reload,
    destroy: () => reload.cancel(),
  };
}
