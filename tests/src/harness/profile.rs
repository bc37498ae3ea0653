//! How long the reliability tests run. CI runs the fast variant of each; the long variants
//! (minutes-long outages, soak and hostile-client runs at full scale) run from
//! `tests/reliability.sh`, which sets `GATEHOUSE_LONG_TESTS=1`.

/// Whether the long variants were asked for.
pub fn long() -> bool {
    std::env::var_os("GATEHOUSE_LONG_TESTS").is_some_and(|value| value != "0" && !value.is_empty())
}

/// `fast` in CI, `long` when the long variants were asked for.
pub fn pick<T>(fast: T, long: T) -> T {
    if self::long() { long } else { fast }
}
