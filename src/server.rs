//! Starting the listeners and background tasks; graceful shutdown.

use std::time::Duration;

use crate::{
    config::Config,
    error::{Error, Result},
    services::{AppState, Services},
};

pub async fn run(config: Config) -> Result<()> {
    let listen = config.client.listen;
    // The port and the data directory are taken before the database is opened (and migrated):
    // a second server started by mistake stops here instead of changing the schema under the
    // first.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::internal(format!("cannot listen on {listen}: {e}")))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let state = Services::start(config).await?;
    spawn_background(state.clone());
    let app = crate::api::router(state.clone());
    tracing::info!(
        server_name = %state.config.server_name,
        %listen,
        database = if state.db.dialect == crate::storage::Dialect::Sqlite { "sqlite" } else { "postgres" },
        registration = state.config.registration_enabled(),
        "ganglion is serving the client API"
    );
    let federation = match federation_listener(&state).await? {
        Some(f) => f,
        None => Box::pin(std::future::pending()),
    };
    let client = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        r = client => r.map_err(|e| Error::internal(format!("server error: {e}")))?,
        r = federation => r?,
    }
    tracing::info!("shut down");
    Ok(())
}

/// An exclusive lock on `data_dir/ganglion.lock`, held while the server runs: one server per
/// data directory (its SQLite database, signing key and media).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::internal(format!("cannot create data_dir {}: {e}", dir.display())))?;
    let path = dir.join("ganglion.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::internal(format!(
            "another ganglion process is using {} (it holds {})",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::internal(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// The federation listener (TLS, its own address), when federation is enabled.
async fn federation_listener(state: &AppState) -> Result<Option<Serving>> {
    let f = &state.config.federation;
    if !f.enabled {
        return Ok(None);
    }
    let (Some(listen), Some(cert), Some(key)) = (f.listen, &f.tls_cert, &f.tls_key) else {
        return Err(Error::internal(
            "federation needs federation.listen, tls_cert and tls_key",
        ));
    };
    let mut tls = ganglion_federation::tls::server_config(cert, key)
        .map_err(|e| Error::internal(format!("federation TLS: {e}")))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = axum_server::tls_rustls::RustlsConfig::from_config(std::sync::Arc::new(tls));
    let std_listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Error::internal(format!("cannot listen on {listen}: {e}")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::internal(format!("federation listener: {e}")))?;
    let app = crate::api::federation::router(state.clone());
    tracing::info!(%listen, "serving the federation API (TLS)");
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let server = axum_server::from_tcp_rustls(std_listener, config)
        .map_err(|e| Error::internal(format!("federation listener: {e}")))?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>());
    Ok(Some(Box::pin(async move {
        server
            .await
            .map_err(|e| Error::internal(format!("federation server error: {e}")))
    })))
}

fn spawn_background(s: AppState) {
    let peers = s.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::federation::outbound::announce_up(&peers).await {
            tracing::warn!("telling peers we are up failed: {e}");
        }
    });
    crate::users::presence::spawn_sweeper(s.clone());
    crate::push::gateway::spawn(s.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for room in s.typing.expire() {
                s.notifier.notify_typing(&room);
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
