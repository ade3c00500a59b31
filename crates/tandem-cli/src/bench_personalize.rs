//! `tandem bench personalize`: personalization API answers (`GET /v1/personalize?userId=…` with a
//! public key) at a fixed rate over keep-alive HTTP/1.1, beside the same open loop on `/healthz`
//! — the machinery of `tandem bench profile-api`.

use crate::bench_profile_api::{
    connect, get, parse_duration, print_comparison, profile_report_reference, reference_phase,
    run_phase, Phase, PhaseReport, Schedule, Target,
};
use anyhow::{bail, Context};
use clap::Args;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct PersonalizeArgs {
    /// Base URL of a running tandem.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A public key (`POST /api/v1/workspaces/{ws}/personalization/keys`).
    #[arg(long, env = "TANDEM_PUBLIC_KEY")]
    key: String,
    /// Ask for users 0..N as `tandem load` and `tandem import` scripts name them
    /// (`user-0000000042`).
    #[arg(long)]
    users: u64,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "/healthz")]
    reference_path: String,
    #[arg(long)]
    json: bool,
}

pub fn personalize(args: PersonalizeArgs) -> anyhow::Result<ExitCode> {
    if args.rate == 0 || args.concurrency == 0 || args.users == 0 {
        bail!("--rate, --concurrency and --users must be at least 1");
    }
    let target = Target::parse(&args.url)?;
    let paths: Vec<String> = (0..args.users)
        .map(|user| {
            format!(
                "{}/v1/personalize?userId={}",
                target.base_path,
                tandem_load::synth::user_id(user)
            )
        })
        .collect();
    let credential = (
        HeaderName::from_static("x-tandem-key"),
        HeaderValue::from_str(&args.key).context("the key is not a valid header value")?,
    );
    let phase = Phase {
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
        .build()?;
    let (measured, referenced, sample) = runtime.block_on(async {
        let mut sender = connect(&target)
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        let (status, body) = get(&mut sender, &target, &phase.paths[0], Some(&credential))
            .await
            .map_err(|error| anyhow::anyhow!("GET {}: {error}", phase.paths[0]))?;
        if status != 200 {
            bail!(
                "GET {} answered {status}: {}",
                phase.paths[0],
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        drop(sender);
        let measured = run_phase(&target, &phase, &schedule).await;
        let referenced = run_phase(&target, &reference, &schedule).await;
        Ok::<_, anyhow::Error>((
            measured,
            referenced,
            String::from_utf8_lossy(&body).to_string(),
        ))
    })?;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let summary = json!({
        "target_requests_per_second": args.rate,
        "concurrency": args.concurrency,
        "users": args.users,
        "personalize": measured.to_json(),
        "reference": profile_report_reference(&referenced, &args.reference_path),
        "p99_ratio": ratio(PhaseReport::ms(&measured.latency_us, 0.99), PhaseReport::ms(&referenced.latency_us, 0.99)),
        "sample_answer": serde_json::from_str::<serde_json::Value>(&sample).unwrap_or_default(),
    });
    if !args.json {
        println!(
            "tandem personalization API benchmark: GET /v1/personalize?userId=… over {} users, {} keep-alive connections, {:.0} s at {} requests/s (open loop) after {:.0} s warm-up",
            args.users,
            args.concurrency,
            args.duration.as_secs_f64(),
            args.rate,
            args.warmup.as_secs_f64()
        );
        print_comparison("personalize", &args.reference_path, &measured, &referenced);
    }
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
