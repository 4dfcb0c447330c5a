//! Builds the portal (`web/`, TypeScript + Vite) with npm when its sources are newer than `web/dist`, copies
//! the built files into OUT_DIR and writes the table (`portal_assets.rs`) that embeds them in the binary.
//! `FLIGHTLOG_PORTAL_DIST=<dir>` embeds a prebuilt dist instead and needs no npm.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Inputs of the web build whose change makes the portal stale (besides everything under `web/src`).
const WEB_INPUTS: &[&str] = &[
    "package.json",
    "package-lock.json",
    "index.html",
    "vite.config.ts",
    "tsconfig.json",
    "scripts/compress.mjs",
];

fn main() {
    println!("cargo:rerun-if-env-changed=FLIGHTLOG_PORTAL_DIST");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dist = match std::env::var_os("FLIGHTLOG_PORTAL_DIST") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if !d.join("index.html").is_file() {
                fail(&format!(
                    "FLIGHTLOG_PORTAL_DIST={} has no index.html; point it at a built portal (web/dist)",
                    d.display()
                ));
            }
            d
        }
        _ => build_web(&manifest.join("../../web")),
    };
    let target = out.join("portal");
    let _ = fs::remove_dir_all(&target);
    let mut files = Vec::new();
    copy_tree(&dist, &target, "", &mut files);
    files.sort();
    write_table(&out.join("portal_assets.rs"), &target, &files);
}

fn fail(msg: &str) -> ! {
    panic!("\n\nflightlog portal: {msg}\n\n");
}

/// Runs `npm install` (when node_modules is missing or older than the lock file) and `npm run build` (when dist is
/// missing or older than any input); returns `web/dist`.
fn build_web(web: &Path) -> PathBuf {
    let web = web
        .canonicalize()
        .unwrap_or_else(|_| fail(&format!("no web/ folder at {}", web.display())));
    println!("cargo:rerun-if-changed={}", web.join("src").display());
    for f in WEB_INPUTS {
        println!("cargo:rerun-if-changed={}", web.join(f).display());
    }
    let dist = web.join("dist");
    let built = mtime(&dist.join("index.html"));
    let newest_input = WEB_INPUTS
        .iter()
        .map(|f| mtime(&web.join(f)))
        .chain(std::iter::once(newest_in(&web.join("src"))))
        .max()
        .flatten();
    let stale = match (built, newest_input) {
        (None, _) => true,
        (Some(b), Some(i)) => i > b,
        (Some(_), None) => false,
    };
    if !stale {
        return dist;
    }
    let installed = mtime(&web.join("node_modules/.package-lock.json"));
    let lock = mtime(&web.join("package-lock.json"));
    if installed.is_none() || lock > installed {
        // `npm install` with the committed lock installs the locked versions; `--no-save` leaves package.json
        // and the lock untouched. (Not `npm ci`: npm 11 rejects a lock that records only this platform's
        // optional packages, e.g. rollup's native binaries, which is the lock npm 11 itself writes.)
        npm(
            &web,
            &[
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
        );
    }
    npm(&web, &["run", "build"]);
    if !dist.join("index.html").is_file() {
        fail("`npm run build` in web/ produced no dist/index.html");
    }
    dist
}

fn npm(web: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        // npm's and Vite's output goes to stderr (never stdout, where cargo reads directives); cargo shows it
        // when the build fails.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .unwrap_or_else(|e| {
            fail(&format!(
                "could not run `npm {}` ({e}). Install Node.js 20+ and npm (e.g. `apt-get install nodejs npm`), \
                 or set FLIGHTLOG_PORTAL_DIST to a prebuilt web/dist",
                args.join(" ")
            ))
        });
    if !status.success() {
        fail(&format!(
            "`npm {}` in {} failed ({status}); see the output above. Node.js 20+ and npm are needed \
             (and the npm registry to install packages), or set FLIGHTLOG_PORTAL_DIST to a prebuilt web/dist",
            args.join(" "),
            web.display()
        ));
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = mtime(dir);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let t = if p.is_dir() { newest_in(&p) } else { mtime(&p) };
        newest = newest.max(t);
    }
    newest
}

/// Copies `from` into `to`, recording each file's URL path (`/assets/x.js`); `.gz` twins are copied but not
/// listed (the table pairs them with their originals).
fn copy_tree(from: &Path, to: &Path, prefix: &str, files: &mut Vec<String>) {
    fs::create_dir_all(to).unwrap_or_else(|e| fail(&format!("{}: {e}", to.display())));
    let entries = fs::read_dir(from)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", from.display())));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (src, dst) = (e.path(), to.join(&name));
        let url = format!("{prefix}/{name}");
        if src.is_dir() {
            copy_tree(&src, &dst, &url, files);
            continue;
        }
        fs::copy(&src, &dst).unwrap_or_else(|e| fail(&format!("copy {}: {e}", src.display())));
        if !name.ends_with(".gz") {
            files.push(url);
        }
    }
}

fn write_table(out: &Path, root: &Path, files: &[String]) {
    let mut s = String::from(
        "/// (URL path, bytes, gzip-compressed bytes if built) of every portal file.\n\
         static ASSETS: &[Asset] = &[\n",
    );
    for url in files {
        let file = root.join(url.trim_start_matches('/'));
        let gz = PathBuf::from(format!("{}.gz", file.display()));
        let gz = if gz.is_file() {
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_string()
        };
        s.push_str(&format!(
            "    ({url:?}, include_bytes!({:?}), {gz}),\n",
            file.display().to_string()
        ));
    }
    s.push_str("];\n");
    fs::write(out, s).unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
}
