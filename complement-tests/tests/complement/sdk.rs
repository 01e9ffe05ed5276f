//! Real client libraries against a real server: matrix-nio (Python, with E2EE) and
//! matrix-js-sdk (the SDK Element is built on). Enabled with `GANGLION_TEST_SDK=1`; the first run
//! installs them (a venv under target/, node_modules under complement-tests/sdk/js).

use std::process::Stdio;

use crate::prelude::*;

backend_tests!(
    python_nio_flow,
    js_sdk_flow,
    python_nio_across_ganglion_nodes,
    python_nio_with_synapse,
);

fn sdk_enabled() -> bool {
    if std::env::var("GANGLION_TEST_SDK").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIPPED: SDK flows need GANGLION_TEST_SDK=1");
    false
}

async fn run_flow(b: Backend, which: &str) {
    if !sdk_enabled() {
        return;
    }
    let server = start(b).await;
    run_script(&server, None, which).await;
}

/// Runs the SDK flow with A on `server` (and B on `second`, when given).
async fn run_script(server: &Server, second: Option<&str>, which: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/complement-tests/sdk/run.sh");
    let mut args: Vec<&str> = vec!["--base", &server.base_url, "--only", which];
    if let Some(b) = second {
        args.extend(["--base-b", b]);
    }
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), out)
        .await
        .unwrap_or_else(|_| panic!("{which} SDK flow did not finish within 15 minutes"))
        .expect("run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{which} SDK flow failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log_tail(60)
    );
}

async fn python_nio_flow(b: Backend) {
    run_flow(b, "python").await;
}

async fn js_sdk_flow(b: Backend) {
    run_flow(b, "js").await;
}

fn federated() -> ServerOptions {
    ServerOptions {
        federation: Some(complement_tests::FederationOptions::default()),
        ..Default::default()
    }
}

/// matrix-nio users on two Ganglion nodes: rooms, messages, relations, typing, receipts and
/// end-to-end encryption across federation.
async fn python_nio_across_ganglion_nodes(b: Backend) {
    if !sdk_enabled() {
        return;
    }
    let (a, other) = tokio::join!(start_with(b, federated()), start_with(b, federated()));
    run_script(&a, Some(&other.base_url), "python").await;
}

/// The same with B on Synapse (needs GANGLION_TEST_SYNAPSE=1 too).
async fn python_nio_with_synapse(b: Backend) {
    if !sdk_enabled() || !complement_tests::synapse::enabled_or_skip() {
        return;
    }
    let (a, syn) = tokio::join!(
        start_with(b, federated()),
        complement_tests::Synapse::start()
    );
    run_script(&a, Some(&syn.client().base), "python").await;
}
