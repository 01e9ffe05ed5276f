//! The server's shared state: configuration, storage, signing key and in-memory coordinators.

use std::sync::Arc;

use ganglion_federation::ServerSigningKey;

use crate::{
    config::Config,
    error::{Error, Result},
    rooms::{RoomLocks, writer::EventWriter},
    storage::Db,
    sync::{notifier::Notifier, typing::Typing},
    users::uia::UiaSessions,
};

pub struct Services {
    pub config: Config,
    pub db: Db,
    pub key: Arc<ServerSigningKey>,
    /// Present when federation is enabled.
    pub federation: Option<crate::federation::Federation>,
    pub room_locks: RoomLocks,
    pub notifier: Arc<Notifier>,
    pub writer: EventWriter,
    pub typing: Typing,
    pub uia: UiaSessions,
    pub device_activity: crate::users::devices::DeviceActivity,
    pub admin_nonces: crate::users::register::Nonces,
    /// Counts wrong passwords per account and address.
    pub login_guard: crate::users::login_guard::LoginGuard,
    pub unread: crate::push::UnreadCache,
    /// Users with an HTTP pusher, and the client that posts to their push gateways.
    pub pushers: crate::push::pushers::PusherUsers,
    /// Made on first use: a server nobody set a pusher on never builds it.
    pub push_client: std::sync::OnceLock<reqwest::Client>,
}

pub type AppState = Arc<Services>;

impl Services {
    pub async fn start(config: Config) -> Result<AppState> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::internal(format!(
                "cannot create data_dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let key = Arc::new(
            ServerSigningKey::load_or_generate(&config.data_dir.join("signing.key"))
                .map_err(Error::internal)?,
        );
        let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
        db.spawn_checkpointer();
        let notifier = Arc::new(Notifier::new(db.stream_position()));
        let federation = crate::federation::service::start(&config, &db, key.clone())?;
        let writer = EventWriter::start(
            db.clone(),
            notifier.clone(),
            federation.as_ref().map(|f| {
                let sender = f.sender.clone();
                crate::rooms::writer::Outbound {
                    server_name: config.server_name.to_string(),
                    wake: Arc::new(move |servers: &[String]| {
                        for server in servers {
                            if let Ok(name) = ruma::ServerName::parse(server) {
                                sender.notify(&name);
                            }
                        }
                    }),
                }
            }),
        );
        let pushers = crate::push::pushers::PusherUsers::load(&db).await?;
        let login_guard =
            crate::users::login_guard::LoginGuard::new(config.limits.failed_logins_per_minute);
        Ok(Arc::new(Services {
            pushers,
            push_client: std::sync::OnceLock::new(),
            config,
            db,
            key,
            federation,
            room_locks: RoomLocks::default(),
            notifier,
            writer,
            typing: Typing::default(),
            uia: UiaSessions::default(),
            device_activity: Default::default(),
            admin_nonces: Default::default(),
            login_guard,
            unread: Default::default(),
        }))
    }

    /// The federation services, or a Matrix error when federation is switched off.
    pub fn federation(&self) -> Result<&crate::federation::Federation> {
        self.federation
            .as_ref()
            .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))
    }

    pub fn server_name(&self) -> &str {
        self.config.server_name.as_str()
    }

    /// Whether a user id belongs to this server.
    pub fn is_local(&self, user_id: &ruma::UserId) -> bool {
        user_id.server_name() == self.config.server_name
    }
}
