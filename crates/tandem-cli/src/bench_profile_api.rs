//! `tandem bench profile-api`: Profile API trait lookups at a fixed rate over keep-alive HTTP/1.1,
//! and the same loop against the server's cheapest route (`/healthz`) as the reference.
//!
//! Open loop: request `n` is due at `start + n / rate` whatever happened before it; a pacing
//! thread hands due requests to the connections, and latency counts from the due time, so a
//! stalled server (or a starved client) shows in the percentiles rather than slowing the run
//! down ("coordinated omission"). The client's own lag — due time to the request leaving — is
//! reported apart. Each connection has one request in flight; when all are busy, due requests
//! wait, and that wait is part of their latency.

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// Longest wait for one response before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies above this are recorded as this (µs).
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Args)]
pub struct ProfileApiArgs {
    /// Base URL of a running tandem.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A workspace access token (`POST /api/v1/workspaces/{ws}/access-tokens`), sent as the HTTP
    /// Basic user name with an empty password.
    #[arg(long, env = "TANDEM_ACCESS_TOKEN")]
    token: String,
    #[arg(long)]
    workspace: String,
    /// Query `user_id:` of users 0..N as `tandem load` and `tandem bench unify` name them
    /// (`user-0000000042`).
    #[arg(long)]
    users: Option<u64>,
    /// Or: a file of identifiers to query, one `type:value` per line.
    #[arg(long, conflicts_with = "users")]
    ids_file: Option<PathBuf>,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Measured time per phase, e.g. `20s`, `500ms`, `2m`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Time per phase before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The reference route of the same server.
    #[arg(long, default_value = "/healthz")]
    reference_path: String,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
}

/// `20s`, `500ms`, `2m`, or plain seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 20s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` (ms, s, m)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Percent-encodes a path segment (RFC 3986 `pchar` kept as is).
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where requests go.
#[derive(Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    host_header: HeaderValue,
    pub(crate) base_path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("`{url}`: only http:// is supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("`{url}` has no host"))?;
        Ok(Target {
            host: authority.host().trim_matches(['[', ']']).to_string(),
            port: authority.port_u16().unwrap_or(80),
            host_header: HeaderValue::from_str(authority.as_str()).context("bad host")?,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

pub(crate) async fn connect(target: &Target) -> std::io::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET; the status, or why there was none.
pub(crate) async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    path: &str,
    credential: Option<&(HeaderName, HeaderValue)>,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        sender.ready().await?;
        let mut request = Request::get(path)
            .header(HOST, target.host_header.clone())
            .header(USER_AGENT, "tandem-bench");
        if let Some((name, value)) = credential {
            request = request.header(name.clone(), value.clone());
        }
        let request = request.body(Empty::new()).expect("a valid request");
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no response within {REQUEST_TIMEOUT:?}")),
    }
}

/// What one phase measured.
pub(crate) struct PhaseReport {
    /// Responses to requests due in the measured window.
    responses: u64,
    ok: u64,
    failed_by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    transport_sample: Option<String>,
    seconds: f64,
    /// Due time to the response of a 2xx, µs.
    pub(crate) latency_us: Histogram<u64>,
    /// Due time to the request being handed to the connection, µs.
    lag_us: Histogram<u64>,
}

impl PhaseReport {
    fn new() -> PhaseReport {
        let histogram =
            || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds");
        PhaseReport {
            responses: 0,
            ok: 0,
            failed_by_status: BTreeMap::new(),
            transport_errors: 0,
            transport_sample: None,
            seconds: 0.0,
            latency_us: histogram(),
            lag_us: histogram(),
        }
    }

    fn merge(&mut self, other: PhaseReport) {
        self.responses += other.responses;
        self.ok += other.ok;
        for (status, count) in other.failed_by_status {
            *self.failed_by_status.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        self.transport_sample = self.transport_sample.take().or(other.transport_sample);
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.lag_us.add(&other.lag_us).expect("same bounds");
    }

    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.responses as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub(crate) fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
        if histogram.is_empty() {
            return 0.0;
        }
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn errors(&self) -> String {
        let mut parts: Vec<String> = self
            .failed_by_status
            .iter()
            .map(|(status, count)| format!("{status}×{count}"))
            .collect();
        if self.transport_errors > 0 {
            parts.push(format!("transport×{}", self.transport_errors));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let failed: BTreeMap<String, u64> = self
            .failed_by_status
            .iter()
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        json!({
            "requests_per_second": self.rate(),
            "responses": self.responses,
            "ok": self.ok,
            "failed_by_status": failed,
            "transport_errors": self.transport_errors,
            "transport_error_sample": self.transport_sample,
            "seconds": self.seconds,
            "latency_ms": {
                "p50": Self::ms(&self.latency_us, 0.5),
                "p90": Self::ms(&self.latency_us, 0.9),
                "p99": Self::ms(&self.latency_us, 0.99),
                "p999": Self::ms(&self.latency_us, 0.999),
                "max": if self.latency_us.is_empty() { 0.0 } else { self.latency_us.max() as f64 / 1000.0 },
            },
            "client_lag_ms": {
                "p50": Self::ms(&self.lag_us, 0.5),
                "p99": Self::ms(&self.lag_us, 0.99),
            },
        })
    }
}

/// What a phase asks: one of `paths` per request, with `credential` as a header.
pub(crate) struct Phase {
    pub(crate) paths: Arc<Vec<String>>,
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
}

/// How fast and how long a phase runs.
pub(crate) struct Schedule {
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) concurrency: usize,
}

/// Runs `phase` at `args.rate` for warm-up plus duration.
pub(crate) async fn run_phase(target: &Target, phase: &Phase, args: &Schedule) -> PhaseReport {
    // Connect first, so connection setup is not part of the schedule.
    let mut senders = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        match connect(target).await {
            Ok(sender) => senders.push(Some(sender)),
            Err(_) => senders.push(None),
        }
    }
    let total = ((args.warmup + args.duration).as_secs_f64() * args.rate as f64) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + args.warmup;
    let rate = args.rate;
    let (due_sender, due_receiver) = mpsc::unbounded_channel::<Instant>();
    // A thread, not a timer: tokio's timers have millisecond granularity, which would be most
    // of what is measured here.
    let pacer = std::thread::spawn(move || {
        for n in 0..total {
            let due =
                start + Duration::from_nanos((n as u128 * 1_000_000_000 / rate as u128) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due_sender.send(due).is_err() {
                return;
            }
        }
    });
    let queue = Arc::new(Mutex::new(due_receiver));
    let mut workers = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let queue = queue.clone();
        let target = target.clone();
        let paths = phase.paths.clone();
        let credential = phase.credential.clone();
        workers.push(tokio::spawn(async move {
            let mut report = PhaseReport::new();
            let mut sender = sender;
            let mut last_response = measure_from;
            let mut picked = index as u64;
            loop {
                let due = {
                    let mut queue = queue.lock().await;
                    queue.recv().await
                };
                let Some(due) = due else { break };
                let measured = due >= measure_from;
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    sender = connect(&target).await.ok();
                }
                let Some(connection) = sender.as_mut() else {
                    if measured {
                        report.transport_errors += 1;
                        report
                            .transport_sample
                            .get_or_insert_with(|| "cannot connect".into());
                    }
                    continue;
                };
                // Spread the identifiers over the run; each worker steps through its own part.
                picked = picked
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let path = &paths[((picked >> 33) % paths.len() as u64) as usize];
                let sent = Instant::now();
                let outcome = get(connection, &target, path, credential.as_ref()).await;
                let done = Instant::now();
                if !measured {
                    if outcome.is_err() {
                        sender = None;
                    }
                    continue;
                }
                last_response = last_response.max(done);
                let micros = |d: Duration| (d.as_micros() as u64).clamp(1, LATENCY_US_MAX);
                report
                    .lag_us
                    .record(micros(sent.saturating_duration_since(due)))
                    .ok();
                match outcome {
                    Ok((status, _)) => {
                        report.responses += 1;
                        if (200..300).contains(&status) {
                            report.ok += 1;
                            report.latency_us.record(micros(done - due)).ok();
                        } else {
                            *report.failed_by_status.entry(status).or_default() += 1;
                        }
                    }
                    Err(error) => {
                        report.transport_errors += 1;
                        report.transport_sample.get_or_insert(error);
                        sender = None;
                    }
                }
            }
            (report, last_response)
        }));
    }
    let mut total_report = PhaseReport::new();
    let mut last = measure_from;
    for worker in workers {
        if let Ok((report, last_response)) = worker.await {
            total_report.merge(report);
            last = last.max(last_response);
        }
    }
    pacer.join().ok();
    total_report.seconds = last.saturating_duration_since(measure_from).as_secs_f64();
    total_report
}

fn identifiers(args: &ProfileApiArgs) -> anyhow::Result<Vec<String>> {
    match (&args.users, &args.ids_file) {
        (Some(0), _) => bail!("--users must be at least 1"),
        (Some(users), _) => Ok((0..*users)
            .map(|user| format!("user_id:{}", tandem_load::synth::user_id(user)))
            .collect()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let ids: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = ids.iter().find(|id| !id.contains(':')) {
                bail!("{}: `{bad}` is not `type:value`", path.display());
            }
            if ids.is_empty() {
                bail!("{} names no identifier", path.display());
            }
            Ok(ids)
        }
        (None, None) => bail!("name the profiles to query: --users N or --ids-file FILE"),
    }
}

pub fn profile_api(args: ProfileApiArgs) -> anyhow::Result<ExitCode> {
    if args.rate == 0 || args.concurrency == 0 {
        bail!("--rate and --concurrency must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration must be positive");
    }
    let target = Target::parse(&args.url)?;
    let ids = identifiers(&args)?;
    let workspace = encode_segment(&args.workspace);
    let paths: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{}/v1/spaces/{workspace}/collections/users/profiles/{}/traits",
                target.base_path,
                encode_segment(id)
            )
        })
        .collect();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.token));
    let authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
        .context("the token is not a valid header value")?;
    let credential = (AUTHORIZATION, authorization);
    let profile = Phase {
        paths: Arc::new(paths),
        credential: Some(credential.clone()),
    };
    let reference = reference_phase(&target, &args.reference_path);
    let schedule = Schedule {
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        concurrency: args.concurrency,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (profile_report, reference_report) = runtime.block_on(async {
        // One lookup first: a wrong token or workspace is said plainly, not as 100,000 errors.
        let mut sender = connect(&target)
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        let (status, body) = get(&mut sender, &target, &profile.paths[0], Some(&credential))
            .await
            .map_err(|error| anyhow::anyhow!("GET {}: {error}", profile.paths[0]))?;
        if matches!(status, 401 | 403) || status >= 500 {
            bail!(
                "GET {} answered {status}: {}",
                profile.paths[0],
                String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
            );
        }
        if status != 200 && !args.json {
            eprintln!(
                "note: GET {} answered {status} (unknown profile?); lookups that do not answer 200 are counted as errors",
                profile.paths[0]
            );
        }
        drop(sender);
        let profile_report = run_phase(&target, &profile, &schedule).await;
        let reference_report = run_phase(&target, &reference, &schedule).await;
        Ok((profile_report, reference_report))
    })?;
    if profile_report.ok == 0 {
        bail!(
            "no lookup answered 2xx (errors: {}{})",
            profile_report.errors(),
            profile_report
                .transport_sample
                .as_deref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let summary = json!({
        "target_requests_per_second": args.rate,
        "concurrency": args.concurrency,
        "identifiers": profile.paths.len(),
        "profile_api": profile_report.to_json(),
        "reference": profile_report_reference(&reference_report, &args.reference_path),
        "p99_ratio": ratio(
            PhaseReport::ms(&profile_report.latency_us, 0.99),
            PhaseReport::ms(&reference_report.latency_us, 0.99)
        ),
    });
    if !args.json {
        println!(
            "tandem Profile API benchmark: GET …/collections/users/profiles/{{id}}/traits over {} identifiers, {} keep-alive connections, {:.0} s at {} requests/s (open loop) after {:.0} s warm-up",
            profile.paths.len(),
            args.concurrency,
            args.duration.as_secs_f64(),
            args.rate,
            args.warmup.as_secs_f64()
        );
        print_comparison(
            "profile API",
            &args.reference_path,
            &profile_report,
            &reference_report,
        );
    }
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// The reference phase: the same loop on the server's cheapest route.
pub(crate) fn reference_phase(target: &Target, path: &str) -> Phase {
    Phase {
        paths: Arc::new(vec![format!(
            "{}/{}",
            target.base_path,
            path.trim_start_matches('/')
        )]),
        credential: None,
    }
}

/// The figures of a measured phase `p` beside its reference `r`, with ratios.
pub(crate) fn print_comparison(
    label: &str,
    reference_path: &str,
    p: &PhaseReport,
    r: &PhaseReport,
) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "{:<36}{:>14}{:>14}{:>8}",
        "figure", label, reference_path, "ratio"
    );
    println!(
        "{:<36}{:>14.0}{:>14.0}{:>8.2}",
        "requests/s achieved",
        p.rate(),
        r.rate(),
        ratio(p.rate(), r.rate())
    );
    for (name, quantile) in [
        ("latency p50 ms", 0.5),
        ("latency p99 ms", 0.99),
        ("latency p99.9 ms", 0.999),
    ] {
        let (a, b) = (
            PhaseReport::ms(&p.latency_us, quantile),
            PhaseReport::ms(&r.latency_us, quantile),
        );
        println!("{name:<36}{a:>14.2}{b:>14.2}{:>8.2}", ratio(a, b));
    }
    println!(
        "{:<36}{:>14.2}{:>14.2}",
        "client lag p99 ms (due → sent)",
        PhaseReport::ms(&p.lag_us, 0.99),
        PhaseReport::ms(&r.lag_us, 0.99)
    );
    println!("{:<36}{:>14}{:>14}", "errors", p.errors(), r.errors());
    if let Some(sample) = &p.transport_sample {
        println!("  transport: {sample}");
    }
}

pub(crate) fn profile_report_reference(report: &PhaseReport, path: &str) -> Value {
    let mut value = report.to_json();
    value["path"] = json!(path);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("user_id:u-1"), "user_id:u-1");
        assert_eq!(encode_segment("email:a+b@x.org"), "email:a+b@x.org");
        assert_eq!(encode_segment("x:a b/c?d#e%"), "x:a%20b%2Fc%3Fd%23e%25");
    }

    #[test]
    fn targets_parse() {
        let target = Target::parse("http://127.0.0.1:9000/base/").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 9000));
        assert_eq!(target.base_path, "/base");
        assert!(Target::parse("https://example.com").is_err());
    }
}
