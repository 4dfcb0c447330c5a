// Portal entry: header (brand, breadcrumbs slot, theme toggle), routes, performance flags.
import "./style.css";
import { h } from "./util";
import { route, start } from "./router";
import { experimentsView } from "./views/experiments";
import { runsView } from "./views/runs";
import { runView } from "./views/run";
import { compareView } from "./views/compare";

(window as unknown as { __flightlog: object }).__flightlog = { chartsDrawn: false, runsTableReady: false };

function setTheme(t: string): void {
  document.documentElement.dataset.theme = t;
  localStorage.setItem("flightlog-theme", t);
  window.dispatchEvent(new Event("flightlog-theme"));
}

const toggle = h(
  "button.icon-btn",
  {
    "data-testid": "theme-toggle",
    title: "Toggle light/dark theme",
    onclick: () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"),
  },
  h("span.theme-icon"),
);

const header = h(
  "header.top",
  null,
  h("a.brand", { href: "/" }, h("span.logo"), "flightlog"),
  h("nav#crumbs.crumbs"),
  h("div.spacer"),
  toggle,
);
const main = h("main#view");
document.getElementById("app")!.append(header, main);

route(/^\/$/, experimentsView);
route(/^\/experiments\/([^/]+)$/, runsView);
route(/^\/runs\/([0-9a-f]+)$/, runView);
route(/^\/compare$/, compareView);
start(main);
