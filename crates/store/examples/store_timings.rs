//! Prints how long the embedded store takes for its hot reads: a 1M-point scalar series read whole and
//! downsampled (cold and cached), and a 10,000-run listing. Run with `cargo run --release -p flightlog-store
//! --example store_timings [scalars|list]` (both by default).

use flightlog_model::*;
use flightlog_store::embedded::EmbeddedStore;
use flightlog_store::Store;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<()> {
    let what = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().map_err(Error::storage)?;
    if what != "list" {
        scalars(dir.path())?;
    }
    if what != "scalars" && what != "writers" {
        listing(dir.path())?;
    }
    if what.is_empty() || what == "writers" {
        writers(dir.path())?;
    }
    Ok(())
}

/// 32 threads each sending 200 small batches (the server's many-clients shape): group commit at work.
fn writers(dir: &Path) -> Result<()> {
    let store = EmbeddedStore::open(dir)?;
    let run = store.create_run(NewRun::default())?.id;
    let t = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..32 {
            let (store, run) = (&store, &run);
            scope.spawn(move || {
                for i in 0..200 {
                    let w = ScalarWrite {
                        name: format!("m{thread}"),
                        values: vec![F64(i as f64)],
                        ..Default::default()
                    };
                    store
                        .write_batch(
                            run,
                            Batch {
                                scalars: vec![w],
                                ..Default::default()
                            },
                        )
                        .unwrap();
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "32 threads x 200 batches: {:.0} durable batches/s",
        6400.0 / secs
    );
    Ok(())
}

fn scalars(dir: &Path) -> Result<()> {
    let store = EmbeddedStore::open(dir)?;
    let run = store.create_run(NewRun::default())?.id;
    let n = 1_000_000usize;
    let t = Instant::now();
    for start in (0..n).step_by(10_000) {
        let values = (start..start + 10_000)
            .map(|i| F64(((i as f64) * 0.001).sin()))
            .collect();
        let w = ScalarWrite {
            name: "loss".into(),
            values,
            ..Default::default()
        };
        store.write_batch(
            &run,
            Batch {
                scalars: vec![w],
                ..Default::default()
            },
        )?;
    }
    println!("write 1M points in 100 batches: {:?}", t.elapsed());
    let all = ReadRange::default();
    let t = Instant::now();
    let s = store.read_scalars(&run, "loss", &all)?;
    println!("read_scalars: {} points in {:?}", s.len(), t.elapsed());
    let mid = ReadRange {
        start_index: 500_000,
        limit: Some(10_000),
        ..Default::default()
    };
    let t = Instant::now();
    store.read_scalars(&run, "loss", &mid)?;
    println!(
        "read_scalars of 10k points at index 500k: {:?}",
        t.elapsed()
    );
    for label in [
        "read_downsampled 1000 (cold)",
        "read_downsampled 1000 (cached)",
    ] {
        let t = Instant::now();
        let d = store.read_downsampled(&run, "loss", &all, 1000)?;
        println!("{label}: {} points in {:?}", d.len(), t.elapsed());
    }
    let t = Instant::now();
    let s = store.read_scalars(&run, "loss", &all)?;
    println!(
        "read_scalars (cached): {} points in {:?}",
        s.len(),
        t.elapsed()
    );
    Ok(())
}

fn listing(dir: &Path) -> Result<()> {
    let store = EmbeddedStore::open(dir)?;
    let tags = [("team".to_string(), "vision".to_string())];
    for i in 0..10_000 {
        let new = NewRun {
            tags: tags.clone().into(),
            params: [("lr".to_string(), format!("0.{i}"))].into(),
            ..Default::default()
        };
        store.create_run(new)?;
    }
    let q = RunQuery {
        limit: Some(50_000),
        ..Default::default()
    };
    for label in ["list 10k runs", "list 10k runs (again)"] {
        let t = Instant::now();
        let page = store.list_runs(&q)?;
        println!("{label}: {} runs in {:?}", page.items.len(), t.elapsed());
    }
    let t = Instant::now();
    let page = store.list_runs(&RunQuery {
        with_metrics: true,
        ..q.clone()
    })?;
    println!(
        "list 10k runs with metrics: {} runs in {:?}",
        page.items.len(),
        t.elapsed()
    );
    if std::env::var_os("REPEAT").is_some() {
        let best = |f: &dyn Fn()| {
            (0..10)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        println!(
            "best list: {:?}",
            best(&|| {
                store.list_runs(&q).unwrap();
            })
        );
        let wm = RunQuery {
            with_metrics: true,
            ..q.clone()
        };
        println!(
            "best list with metrics: {:?}",
            best(&|| {
                store.list_runs(&wm).unwrap();
            })
        );
        let conn = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
        let sql = |cols: &str| {
            format!("SELECT {cols} FROM runs r WHERE r.lifecycle = 'active' ORDER BY r.created_time DESC, r.id LIMIT 50001")
        };
        for cols in ["id", "*"] {
            let s = sql(cols);
            println!(
                "raw sql {cols}: {:?}",
                best(&|| {
                    let mut st = conn.prepare_cached(&s).unwrap();
                    let mut rows = st.query([]).unwrap();
                    while let Some(r) = rows.next().unwrap() {
                        let _ = r.get_ref(0).unwrap();
                    }
                })
            );
        }
    }
    Ok(())
}
