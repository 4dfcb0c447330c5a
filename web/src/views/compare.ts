import { h } from "../util";
export function compareView(root: HTMLElement, p: string[]): void {
  root.append(h("div.page", null, "compare " + p.join(",")));
}
