import { h } from "../util";
export function runView(root: HTMLElement, p: string[]): void {
  root.append(h("div.page", null, "run " + p.join(",")));
}
