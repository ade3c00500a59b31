//! What a run measured: per-worker tallies merged into one [`LoadReport`], and the live
//! [`Snapshot`]s shown while it runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency the histogram resolves (60 s, in µs); slower answers are recorded as this.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant digits kept by the histogram: 0.1 % error, ~200 KB per worker.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// One worker's counts for one phase (warm-up or measured). Merged at the end, so workers never
/// contend on shared counters for anything but the live snapshot.
pub struct Tally {
    pub events_ok: u64,
    pub requests_ok: u64,
    pub failed_by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub retries: u64,
    pub bytes_sent: u64,
    /// Acknowledgement latency of requests answered 200, in µs.
    pub latency_us: Histogram<u64>,
    pub error_samples: BTreeMap<u16, String>,
    pub transport_error_sample: Option<String>,
    pub last_completion: Option<Instant>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            events_ok: 0,
            requests_ok: 0,
            failed_by_status: BTreeMap::new(),
            transport_errors: 0,
            retries: 0,
            bytes_sent: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds"),
            error_samples: BTreeMap::new(),
            transport_error_sample: None,
            last_completion: None,
        }
    }

    pub fn record_latency(&mut self, latency: Duration) {
        self.latency_us
            .saturating_record((latency.as_micros() as u64).clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, other: Tally) {
        self.events_ok += other.events_ok;
        self.requests_ok += other.requests_ok;
        for (status, count) in other.failed_by_status {
            *self.failed_by_status.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        self.retries += other.retries;
        self.bytes_sent += other.bytes_sent;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        for (status, sample) in other.error_samples {
            self.error_samples.entry(status).or_insert(sample);
        }
        self.transport_error_sample = self
            .transport_error_sample
            .take()
            .or(other.transport_error_sample);
        self.last_completion = self.last_completion.max(other.last_completion);
    }
}

/// Counters every worker bumps as requests finish, read by the progress display.
#[derive(Default)]
pub struct LiveCounters {
    pub events_ok: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub transport_errors: AtomicU64,
}

/// Progress of a running load, passed to the `progress` callback about once a second.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Since the run started (warm-up included).
    pub elapsed: Duration,
    pub warming_up: bool,
    /// Totals so far, warm-up included.
    pub events_ok: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub transport_errors: u64,
    /// Acknowledged events per second since the previous snapshot.
    pub events_per_second: f64,
}

impl LiveCounters {
    pub fn snapshot(
        &self,
        elapsed: Duration,
        warming_up: bool,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let events_ok = self.events_ok.load(Ordering::Relaxed);
        let (previous_events, previous_elapsed) = previous
            .map_or((0, Duration::ZERO), |snapshot| {
                (snapshot.events_ok, snapshot.elapsed)
            });
        let interval = elapsed.saturating_sub(previous_elapsed).as_secs_f64();
        Snapshot {
            elapsed,
            warming_up,
            events_ok,
            requests_ok: self.requests_ok.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            events_per_second: if interval > 0.0 {
                events_ok.saturating_sub(previous_events) as f64 / interval
            } else {
                0.0
            },
        }
    }
}

/// Acknowledgement latency percentiles in microseconds (0 when nothing was acknowledged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile: f64| histogram.value_at_quantile(quantile);
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: histogram.max(),
        }
    }
}

/// The result of a load run. Counts cover the measured window only (requests due after the
/// warm-up); the warm-up's acknowledged events are given separately so that
/// `warmup_events_ok + events_sent_ok` is everything the server acknowledged.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Events in batches answered 200.
    pub events_sent_ok: u64,
    pub requests_ok: u64,
    /// Every non-200 answer, including 429/503 answers to batches that were then resent.
    pub requests_failed_by_status: BTreeMap<u16, u64>,
    /// Requests with no answer: refused, reset, or no response within the request timeout.
    pub transport_errors: u64,
    /// Batches resent after a 429/503.
    pub retries: u64,
    /// From the end of the warm-up to the last response of the measured window.
    pub elapsed: Duration,
    pub events_per_second: f64,
    /// From the time each request was due (open loop) or first sent (closed loop) to its 200.
    pub latency_us: Percentiles,
    /// Request body bytes put on the wire, resends included.
    pub bytes_sent: u64,
    pub warmup_events_ok: u64,
    pub warmup_requests_ok: u64,
    /// With a target rate: requests that fell due during the run (warm-up included) but were
    /// never sent because every worker was still waiting on the server. Non-zero means the
    /// server did not sustain the target rate with this concurrency.
    pub requests_behind_schedule: u64,
    /// First response body seen for each failing status, to tell what the server objected to.
    pub error_samples: BTreeMap<u16, String>,
    pub transport_error_sample: Option<String>,
    pub concurrency: usize,
    pub batch_events: usize,
    pub target_events_per_second: Option<u64>,
}

impl LoadReport {
    pub fn from_tallies(
        measured: Tally,
        warmup: &Tally,
        measure_start: Instant,
        options: &crate::LoadOptions,
    ) -> LoadReport {
        let elapsed = measured.last_completion.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_start)
        });
        let seconds = elapsed.as_secs_f64();
        LoadReport {
            events_sent_ok: measured.events_ok,
            requests_ok: measured.requests_ok,
            events_per_second: if seconds > 0.0 {
                measured.events_ok as f64 / seconds
            } else {
                0.0
            },
            latency_us: Percentiles::of(&measured.latency_us),
            requests_failed_by_status: measured.failed_by_status,
            transport_errors: measured.transport_errors,
            retries: measured.retries,
            elapsed,
            bytes_sent: measured.bytes_sent,
            warmup_events_ok: warmup.events_ok,
            warmup_requests_ok: warmup.requests_ok,
            requests_behind_schedule: 0,
            error_samples: measured.error_samples,
            transport_error_sample: measured.transport_error_sample,
            concurrency: options.concurrency,
            batch_events: options.batch_events,
            target_events_per_second: options.rate_events_per_second,
        }
    }

    pub fn requests_failed(&self) -> u64 {
        self.requests_failed_by_status.values().sum()
    }

    pub fn to_json(&self) -> Value {
        let failed: BTreeMap<String, u64> = self
            .requests_failed_by_status
            .iter()
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        let samples: BTreeMap<String, &str> = self
            .error_samples
            .iter()
            .map(|(status, body)| (status.to_string(), body.as_str()))
            .collect();
        let latency = self.latency_us;
        json!({
            "events_sent_ok": self.events_sent_ok,
            "requests_ok": self.requests_ok,
            "requests_failed_by_status": failed,
            "transport_errors": self.transport_errors,
            "retries": self.retries,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "events_per_second": self.events_per_second,
            "latency_us": { "p50": latency.p50, "p90": latency.p90, "p99": latency.p99, "p999": latency.p999, "max": latency.max },
            "bytes_sent": self.bytes_sent,
            "warmup_events_ok": self.warmup_events_ok,
            "warmup_requests_ok": self.warmup_requests_ok,
            "requests_behind_schedule": self.requests_behind_schedule,
            "error_samples": samples,
            "transport_error_sample": self.transport_error_sample,
            "concurrency": self.concurrency,
            "batch_events": self.batch_events,
            "target_events_per_second": self.target_events_per_second,
        })
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let megabytes_per_second = if seconds > 0.0 {
            self.bytes_sent as f64 / 1e6 / seconds
        } else {
            0.0
        };
        let target = self
            .target_events_per_second
            .map_or("max".to_owned(), |rate| format!("{rate}/s"));
        writeln!(
            formatter,
            "load      {} workers × {} events/request, rate {target}, {seconds:.2} s measured",
            self.concurrency, self.batch_events
        )?;
        writeln!(
            formatter,
            "acked     {:>12} events  {:>10.0} events/s  ({} requests)",
            self.events_sent_ok, self.events_per_second, self.requests_ok
        )?;
        writeln!(
            formatter,
            "sent      {:>12.1} MB      {megabytes_per_second:>10.1} MB/s",
            self.bytes_sent as f64 / 1e6
        )?;
        let latency = self.latency_us;
        writeln!(
            formatter,
            "latency   p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
            latency.p50, latency.p90, latency.p99, latency.p999, latency.max
        )?;
        let failed: Vec<String> = self
            .requests_failed_by_status
            .iter()
            .map(|(status, count)| format!("{status}×{count}"))
            .collect();
        let failed = if failed.is_empty() {
            "none".to_owned()
        } else {
            failed.join(" ")
        };
        writeln!(
            formatter,
            "failed    {failed}  retries {}  transport errors {}",
            self.retries, self.transport_errors
        )?;
        if self.requests_behind_schedule > 0 {
            writeln!(
                formatter,
                "behind    {} requests due but never sent: the target rate was not sustained",
                self.requests_behind_schedule
            )?;
        }
        for (status, body) in &self.error_samples {
            writeln!(formatter, "  {status}: {body}")?;
        }
        if let Some(sample) = &self.transport_error_sample {
            writeln!(formatter, "  transport: {sample}")?;
        }
        write!(
            formatter,
            "warm-up   {} events acked in {} requests (not counted above)",
            self.warmup_events_ok, self.warmup_requests_ok
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_tallies_and_computes_rates() {
        let start = Instant::now();
        let mut first = Tally::new();
        first.events_ok = 100;
        first.requests_ok = 1;
        first.record_latency(Duration::from_millis(2));
        first.failed_by_status.insert(503, 2);
        first.last_completion = Some(start + Duration::from_secs(1));
        let mut second = Tally::new();
        second.events_ok = 100;
        second.requests_ok = 1;
        second.record_latency(Duration::from_millis(4));
        second.failed_by_status.insert(503, 1);
        second.error_samples.insert(400, "bad".into());
        second.last_completion = Some(start + Duration::from_secs(2));
        first.merge(second);
        let report =
            LoadReport::from_tallies(first, &Tally::new(), start, &crate::LoadOptions::default());
        assert_eq!(
            (
                report.events_sent_ok,
                report.requests_ok,
                report.requests_failed()
            ),
            (200, 2, 3)
        );
        assert_eq!(report.elapsed, Duration::from_secs(2));
        assert_eq!(report.events_per_second, 100.0);
        assert!(
            report.latency_us.p50.abs_diff(2000) < 10 && report.latency_us.max.abs_diff(4000) < 10
        );
        assert_eq!(report.to_json()["requests_failed_by_status"]["503"], 3);
        let table = report.to_string();
        assert!(
            table.contains("503×3") && table.contains("400: bad"),
            "{table}"
        );
    }

    #[test]
    fn empty_run_reports_zeroes() {
        let report = LoadReport::from_tallies(
            Tally::new(),
            &Tally::new(),
            Instant::now(),
            &crate::LoadOptions::default(),
        );
        assert_eq!(
            (report.events_per_second, report.latency_us),
            (0.0, Percentiles::default())
        );
    }
}
