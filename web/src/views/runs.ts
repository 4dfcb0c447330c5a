import { h } from "../util";
export function runsView(root: HTMLElement, p: string[]): void {
  root.append(h("div.page", null, "runs " + p.join(",")));
}
