//! Percentiles of measured delays, and the Markdown table every subcommand prints.

use std::fmt::Write as _;
use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of `samples`, which need not be sorted.
/// Nearest rank rather than interpolation: the answer is always a delay that was measured,
/// so with 200 samples p99 is the second largest, not a blend of the two largest.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    // Rank 1..=n; p = 0 means the smallest.
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0);
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted.get(index).copied()
}

/// p50, p99 and max of a set of delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Option<Self> {
        Some(Self {
            p50: percentile(samples, 50.0)?,
            p99: percentile(samples, 99.0)?,
            max: percentile(samples, 100.0)?,
        })
    }
}

/// A delay in milliseconds with three decimals (microsecond resolution).
pub fn millis(delay: Duration) -> String {
    format!("{:.3} ms", delay.as_secs_f64() * 1000.0)
}

/// A byte count in MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A Markdown table: a header and rows of the same width.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|&cell| cell.to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        };
        line(&mut out, &self.header);
        line(&mut out, &vec!["---".to_owned(); self.header.len()]);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn p99_of_two_hundred_is_the_second_largest() {
        let samples = ms(&(1..=200).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(198)));
    }

    #[test]
    fn small_sets_answer_a_measured_value() {
        assert_eq!(percentile(&ms(&[7]), 99.0), Some(Duration::from_millis(7)));
        assert_eq!(
            percentile(&ms(&[3, 9]), 50.0),
            Some(Duration::from_millis(3))
        );
        assert_eq!(
            percentile(&ms(&[3, 9]), 51.0),
            Some(Duration::from_millis(9))
        );
    }

    #[test]
    fn nothing_measured_is_no_percentile() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(percentile(&ms(&[1]), 101.0), None);
    }

    #[test]
    fn summary_and_table() {
        let summary = Summary::of(&ms(&[5, 1, 3])).unwrap();
        assert_eq!(summary.p50, Duration::from_millis(3));
        assert_eq!(summary.max, Duration::from_millis(5));
        let mut table = Table::new(&["a", "b"]);
        table.row(vec!["1".into(), millis(Duration::from_micros(1500))]);
        assert_eq!(
            table.render(),
            "| a | b |\n| --- | --- |\n| 1 | 1.500 ms |\n"
        );
    }
}
