//! Fuzzes the event file reader: any bytes, whole or split anywhere, parse without panicking, within bounds.
#![no_main]

use flightlog_tensorboard::{parse_events, summary::ValueDecoder, proto::event::What};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_events(data, 0, "fuzz");
    let mut decoder = ValueDecoder::default();
    for (_, e) in &whole.events {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                let _ = decoder.decode(v);
            }
        }
    }
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let first = parse_events(&data[..split], 0, "fuzz");
    let rest = parse_events(&data[first.consumed..], first.consumed as u64, "fuzz");
    assert!(first.consumed <= split && first.consumed + rest.consumed <= data.len());
    assert!(whole.events.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(whole.events.iter().all(|(o, _)| (*o as usize) < data.len()));
});
