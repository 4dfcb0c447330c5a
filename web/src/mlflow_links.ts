// MLflow UI links as portal paths. The mlflow client prints a link after each run ("View run ... at:
// http://host/#/experiments/1/runs/<id>") and notebooks and logs keep such links; pointed at flightlog, they open
// the same experiment, run or comparison here instead of the experiments list.

/** A JSON list of strings in an MLflow query parameter (`runs=["a","b"]`); anything else gives []. */
function idList(raw: string | null): string[] {
  try {
    const v: unknown = JSON.parse(raw ?? "");
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string" && /^[0-9a-f]+$/.test(x)) : [];
  } catch {
    return [];
  }
}

/** The portal path for an MLflow UI hash (`#/experiments/1/runs/abc/artifacts/x`), or null when it is not one. */
export function portalPathForMlflowHash(hash: string): string | null {
  const [path, search = ""] = hash.replace(/^#/, "").split("?", 2);
  const query = new URLSearchParams(search);
  const run = path.match(/^\/experiments\/\d+\/runs\/([0-9a-f]+)(\/artifacts)?(?:\/|$)/);
  if (run) return `/runs/${run[1]}${run[2] ? "?tab=artifacts" : ""}`;
  const experiment = path.match(/^\/experiments\/(\d+)(?:\/|$)/);
  if (experiment) return `/experiments/${experiment[1]}`;
  if (path === "/compare-runs" || path.startsWith("/metric/")) {
    const runs = idList(query.get("runs"));
    if (runs.length === 1) return `/runs/${runs[0]}?tab=metrics`;
    if (runs.length > 1) return `/compare?runs=${runs.join(",")}`;
  }
  return null;
}
