//! Starting the listeners and background tasks; graceful shutdown.

use std::time::Duration;

use crate::{
    config::Config,
    error::{Error, Result},
    services::{AppState, Services},
};

pub async fn run(config: Config) -> Result<()> {
    let listen = config.client.listen;
    let state = Services::start(config).await?;
    spawn_background(state.clone());
    let app = crate::api::router(state.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::internal(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(
        server_name = %state.config.server_name,
        %listen,
        database = if state.db.dialect == crate::storage::Dialect::Sqlite { "sqlite" } else { "postgres" },
        registration = state.config.registration_enabled(),
        "ganglion is serving the client API"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| Error::internal(format!("server error: {e}")))?;
    tracing::info!("shut down");
    Ok(())
}

fn spawn_background(s: AppState) {
    crate::users::presence::spawn_sweeper(s.clone());
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
