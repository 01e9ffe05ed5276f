//! Password hashing with argon2id, off the async runtime.
//!
//! Each argon2 computation takes 19 MiB of memory; at most as many run at once as there are
//! cores (more would not finish sooner, and a burst of logins would otherwise hold hundreds of
//! MiB that the allocator keeps afterwards).

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};

use crate::error::{Error, Result};

static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

/// Waits for a free hashing slot.
async fn slot() -> Result<tokio::sync::SemaphorePermit<'static>> {
    let sem = SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(n)
    });
    sem.acquire()
        .await
        .map_err(|_| Error::internal("password hashing stopped"))
}

pub async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    let _slot = slot().await?;
    tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let salt =
            SaltString::encode_b64(&bytes).map_err(|e| Error::internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("hashing failed: {e}")))
    })
    .await
    .map_err(Error::internal)?
}

pub async fn verify(password: &str, hash: &str) -> Result<bool> {
    let password = password.to_owned();
    let hash = hash.to_owned();
    let _slot = slot().await?;
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(Error::internal)
}
