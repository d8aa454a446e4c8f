//! What the property tests of this crate share: one fixed-seed configuration, so the same
//! commit passes or fails the same way everywhere. `PROPTEST_SEED` and `PROPTEST_CASES` change
//! it for a local look; failures are kept as named tests, not in persistence files.

use proptest::test_runner::{Config, RngSeed};

pub fn config() -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("PROPTEST_CASES").map_or(256, |c| c as u32),
        rng_seed: RngSeed::Fixed(env("PROPTEST_SEED").unwrap_or(0x00cc_5eed)),
        failure_persistence: None,
        ..Config::default()
    }
}
