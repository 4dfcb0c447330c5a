//! Readable default display names for runs ("brave-falcon-042"), so an unnamed run is still easy to tell apart.

const ADJECTIVES: [&str; 32] = [
    "amber", "brave", "calm", "clever", "crisp", "dapper", "eager", "fancy", "gentle", "golden",
    "happy", "jolly", "keen", "lively", "lucky", "mellow", "nimble", "polite", "proud", "quick",
    "quiet", "rapid", "shiny", "silent", "snappy", "steady", "sunny", "swift", "tidy", "vivid",
    "witty", "zesty",
];
const NOUNS: [&str; 32] = [
    "badger", "beacon", "canyon", "comet", "coral", "falcon", "fern", "garden", "glacier",
    "harbor", "heron", "island", "lantern", "maple", "meadow", "nebula", "orchid", "otter",
    "panda", "pebble", "pine", "planet", "quartz", "river", "rocket", "sparrow", "summit", "tiger",
    "tulip", "valley", "willow", "zephyr",
];

/// A random adjective-noun-NNN name.
pub fn generate() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    let n = u16::from_le_bytes([b[2], b[3]]) % 1000;
    format!(
        "{}-{}-{n:03}",
        ADJECTIVES[usize::from(b[0]) % 32],
        NOUNS[usize::from(b[1]) % 32]
    )
}
