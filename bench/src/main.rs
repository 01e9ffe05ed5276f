//! ganglion-bench: a load generator for Matrix homeservers over the client-server API.
//!
//! `ganglion-bench --base http://127.0.0.1:18008 --scenario all [--pid PID]`
//!
//! Prints a human-readable table on stdout followed by one JSON line (starting with `{`) with
//! every number. Progress and errors go to stderr.

mod client;
mod scenarios;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use client::Hs;
use scenarios::Ctx;
use stats::{proc_mem_mb, r3};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Matrix homeserver load generator (client-server API)"
)]
struct Args {
    /// Base URL of the homeserver's client API, e.g. http://127.0.0.1:18008 (loopback only).
    #[arg(long)]
    base: String,
    /// Comma-separated: send, send-sync, initial-sync, all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Label for the output (e.g. ganglion, synapse).
    #[arg(long, default_value = "server")]
    label: String,
    /// Register users via /_synapse/admin/v1/register with this shared secret instead of UIA.
    #[arg(long)]
    shared_secret: Option<String>,
    /// PID of the server process: report VmRSS before and after the load.
    #[arg(long)]
    pid: Option<u32>,
    /// Username prefix (default: derived from the clock, so reruns don't collide).
    #[arg(long)]
    prefix: Option<String>,
    /// send: number of concurrent users.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// send: messages per user.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// send-sync: messages sent one at a time.
    #[arg(long, default_value_t = 300)]
    sync_messages: usize,
    /// initial-sync: rooms the user is in.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// initial-sync: events sent to each room during set-up.
    #[arg(long, default_value_t = 100)]
    events_per_room: usize,
    /// initial-sync: the events come from a second member of each room (so the synced user
    /// has unread messages, and every one is evaluated against their push rules), instead
    /// of from the syncing user.
    #[arg(long)]
    isync_other_sender: bool,
    /// initial-sync: number of timed full syncs.
    #[arg(long, default_value_t = 10)]
    sync_repeats: usize,
    /// Per-request timeout in seconds (long-polls get 30 s more).
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Upper bound on one scenario's total run time, seconds.
    #[arg(long, default_value_t = 1200)]
    scenario_max_secs: u64,
    /// Concurrency of set-up work (registration, joins, filler rooms).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Tokio worker threads for the generator (the server shares the machine's cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Send,
    SendSync,
    InitialSync,
}

fn parse_scenarios(s: &str) -> Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => out.extend([Scenario::Send, Scenario::SendSync, Scenario::InitialSync]),
            "send" => out.push(Scenario::Send),
            "send-sync" | "sendsync" | "send_sync" => out.push(Scenario::SendSync),
            "initial-sync" | "initialsync" | "initial_sync" => out.push(Scenario::InitialSync),
            other => bail!("unknown scenario {other:?} (send, send-sync, initial-sync, all)"),
        }
    }
    out.dedup();
    if out.is_empty() {
        bail!("no scenario given");
    }
    Ok(out)
}

/// Refuses anything but loopback targets: this tool must never load a remote host.
fn check_loopback(base: &str) -> Result<()> {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| anyhow::anyhow!("--base must start with http:// or https://"))?;
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("--base host {host:?} is not a loopback address; refusing");
    }
    Ok(())
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}"))
}

fn mem_json(pid: Option<u32>) -> Value {
    match pid {
        Some(p) => json!({
            "rss_mb": proc_mem_mb(p, "VmRSS").map_or(Value::Null, r3),
            "hwm_mb": proc_mem_mb(p, "VmHWM").map_or(Value::Null, r3),
            // VmRSS counts the binary's mapped code too, which depends on the page cache
            // (a freshly written binary maps in larger pieces); RssAnon is the heap alone.
            "anon_mb": proc_mem_mb(p, "RssAnon").map_or(Value::Null, r3),
        }),
        None => Value::Null,
    }
}

fn main() {
    // Print errors ourselves: anyhow would add a backtrace when RUST_BACKTRACE is set.
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    check_loopback(&args.base)?;
    let scenarios = parse_scenarios(&args.scenario)?;
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(args, scenarios))
}

async fn run(args: Args, scenarios: Vec<Scenario>) -> Result<()> {
    let hs = Arc::new(Hs::new(&args.base, Duration::from_secs(args.timeout_secs))?);
    // Server must be up.
    hs.ok(
        reqwest::Method::GET,
        "/_matrix/client/versions",
        None,
        None,
        None,
    )
    .await?;

    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("b{}", now.as_millis() % 10_000_000_000)
    });
    let ctx = Ctx {
        hs: hs.clone(),
        prefix,
        shared_secret: args.shared_secret.clone(),
        setup_concurrency: args.setup_concurrency,
    };
    if let Some(pid) = args.pid
        && proc_mem_mb(pid, "VmRSS").is_none()
    {
        bail!("cannot read /proc/{pid}/status");
    }
    let mem_before = mem_json(args.pid);
    let max = Duration::from_secs(args.scenario_max_secs);

    let mut out = json!({
        "label": args.label, "base": args.base,
        "params": {
            "users": args.users, "messages": args.messages, "sync_messages": args.sync_messages,
            "rooms": args.rooms, "events_per_room": args.events_per_room,
            "sync_repeats": args.sync_repeats, "threads": args.threads,
        },
    });
    let mut failed = Vec::new();
    for sc in scenarios {
        let (name, res) = match sc {
            Scenario::Send => (
                "send",
                tokio::time::timeout(max, scenarios::send(&ctx, args.users, args.messages))
                    .await
                    .map(|r| r.map(|r| r.to_json())),
            ),
            Scenario::SendSync => (
                "send_sync",
                tokio::time::timeout(
                    max,
                    scenarios::send_sync(&ctx, args.sync_messages, Duration::from_secs(30)),
                )
                .await
                .map(|r| r.map(|r| r.to_json())),
            ),
            Scenario::InitialSync => (
                "initial_sync",
                tokio::time::timeout(
                    max,
                    scenarios::initial_sync(
                        &ctx,
                        args.rooms,
                        args.events_per_room,
                        args.sync_repeats,
                        args.isync_other_sender,
                    ),
                )
                .await
                .map(|r| r.map(|r| r.to_json())),
            ),
        };
        match res {
            Ok(Ok(v)) => {
                eprintln!("[{name}] done");
                out[name] = v;
            }
            Ok(Err(e)) => {
                eprintln!("[{name}] FAILED: {e:#}");
                out[name] = json!({"error": format!("{e:#}")});
                failed.push(name);
            }
            Err(_) => {
                eprintln!("[{name}] FAILED: exceeded {max:?}");
                out[name] = json!({"error": format!("timed out after {max:?}")});
                failed.push(name);
            }
        }
    }
    out["memory"] = json!({"before": mem_before, "after": mem_json(args.pid)});
    out["rate_limited_429"] = json!(hs.rate_limited.load(Ordering::Relaxed));
    out["rate_limited_wait_ms"] = json!(hs.rate_limited_wait_ms.load(Ordering::Relaxed));

    print_table(&out);
    println!("{}", serde_json::to_string(&out)?);
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn print_table(o: &Value) {
    println!(
        "== ganglion-bench: {} ({}) ==",
        o["label"].as_str().unwrap_or(""),
        o["base"].as_str().unwrap_or("")
    );
    println!("{:<34} {:>14}", "metric", "value");
    let row = |k: &str, v: String| println!("{k:<34} {v:>14}");
    let s = &o["send"];
    if s.is_object() && s.get("error").is_none() {
        row("send: events/s", fmt_ms(&s["events_per_s"]));
        row("send: p50 latency ms", fmt_ms(&s["latency"]["p50_ms"]));
        row("send: p99 latency ms", fmt_ms(&s["latency"]["p99_ms"]));
        row(
            "send: sent / errors",
            format!("{} / {}", s["sent"], s["errors"]),
        );
    } else if s.is_object() {
        row("send", "FAILED".into());
    }
    let s = &o["send_sync"];
    if s.is_object() && s.get("error").is_none() {
        row("send->sync: p50 ms", fmt_ms(&s["latency"]["p50_ms"]));
        row("send->sync: p99 ms", fmt_ms(&s["latency"]["p99_ms"]));
        row(
            "send->sync: missed / errors",
            format!("{} / {}", s["missed"], s["errors"]),
        );
    } else if s.is_object() {
        row("send->sync", "FAILED".into());
    }
    let s = &o["initial_sync"];
    if s.is_object() && s.get("error").is_none() {
        row("initial sync: first ms", fmt_ms(&s["first_ms"]));
        row("initial sync: p50 ms", fmt_ms(&s["latency"]["p50_ms"]));
        row("initial sync: p99 ms", fmt_ms(&s["latency"]["p99_ms"]));
        row(
            "initial sync: response KiB",
            format!(
                "{:.1}",
                s["response_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0
            ),
        );
    } else if s.is_object() {
        row("initial sync", "FAILED".into());
    }
    let m = &o["memory"];
    if m["before"].is_object() {
        row("RSS before MB", fmt_ms(&m["before"]["rss_mb"]));
        row("RSS after MB", fmt_ms(&m["after"]["rss_mb"]));
        row(
            "RssAnon before / after MB",
            format!(
                "{} / {}",
                fmt_ms(&m["before"]["anon_mb"]),
                fmt_ms(&m["after"]["anon_mb"])
            ),
        );
        row("peak RSS (VmHWM) MB", fmt_ms(&m["after"]["hwm_mb"]));
    }
    row("429 responses (retried)", o["rate_limited_429"].to_string());
}
