//! Accounts and access tokens.

use sqlx::Row;

use super::{Db, now_ms};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub deactivated: bool,
    pub admin: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
}

impl Db {
    pub async fn create_account(
        &self,
        user_id: &str,
        localpart: &str,
        password_hash: Option<&str>,
        admin: bool,
    ) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO users (user_id, localpart, password_hash, created_ts, admin) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(localpart)
        .bind(password_hash)
        .bind(now_ms())
        .bind(admin as i64)
        .execute(&self.writer)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn account(&self, user_id: &str) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, deactivated, admin, displayname, avatar_url FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Account {
                user_id: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                deactivated: r.try_get::<i64, _>(2)? != 0,
                admin: r.try_get::<i64, _>(3)? != 0,
                displayname: r.try_get(4)?,
                avatar_url: r.try_get(5)?,
            })
        })
        .transpose()
    }

    pub async fn user_exists(&self, user_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn set_deactivated(&self, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        self.token_cache().invalidate();
        Ok(())
    }

    pub async fn set_profile_field(
        &self,
        user_id: &str,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<()> {
        let sql = match field {
            ProfileField::Displayname => "UPDATE users SET displayname = $1 WHERE user_id = $2",
            ProfileField::AvatarUrl => "UPDATE users SET avatar_url = $1 WHERE user_id = $2",
        };
        sqlx::query(sql)
            .bind(value)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_access_token(
        &self,
        token: &str,
        user_id: &str,
        device_id: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO access_tokens (token, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(token)
            .bind(user_id)
            .bind(device_id)
            .bind(now_ms())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Who an access token belongs to (from the token cache when it was looked up before).
    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        let cache = self.token_cache();
        if let Some(owner) = cache.get(token) {
            return Ok(Some(owner));
        }
        let epoch = cache.epoch();
        let row = sqlx::query("SELECT user_id, device_id FROM access_tokens WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        let owner = row
            .map(|r| {
                Ok::<_, crate::error::Error>(TokenOwner {
                    user_id: r.try_get(0)?,
                    device_id: r.try_get(1)?,
                })
            })
            .transpose()?;
        if let Some(o) = &owner {
            cache.put_if_unchanged(token, o, epoch);
        }
        Ok(owner)
    }

    pub async fn delete_access_token(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE token = $1")
            .bind(token)
            .execute(&self.writer)
            .await?;
        self.token_cache().invalidate();
        Ok(())
    }

    pub async fn delete_all_access_tokens(&self, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        self.token_cache().invalidate();
        Ok(())
    }

    /// Every token of the user except `keep`, with its device.
    pub async fn delete_other_tokens(&self, user_id: &str, keep: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND token <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&self.writer)
            .await?;
        self.token_cache().invalidate();
        Ok(())
    }
}

/// Access tokens already looked up. Any token deletion empties it; a lookup that raced with a
/// deletion (its epoch moved on) is not cached, so a revoked token is never served from here.
#[derive(Default)]
pub struct TokenCache {
    inner: std::sync::Mutex<std::collections::HashMap<String, TokenOwner>>,
    epoch: std::sync::atomic::AtomicU64,
}

/// Tokens kept before the cache starts over.
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn get(&self, token: &str) -> Option<TokenOwner> {
        self.inner.lock().ok()?.get(token).cloned()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn put_if_unchanged(&self, token: &str, owner: &TokenOwner, epoch: u64) {
        if let Ok(mut m) = self.inner.lock()
            && self.epoch() == epoch
        {
            if m.len() >= TOKEN_CACHE_MAX {
                m.clear();
            }
            m.insert(token.to_owned(), owner.clone());
        }
    }

    /// Called after tokens were deleted.
    pub fn invalidate(&self) {
        if let Ok(mut m) = self.inner.lock() {
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.clear();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ProfileField {
    Displayname,
    AvatarUrl,
}

impl Db {
    /// Whether an admin-created registration token can still be used.
    pub async fn registration_token_usable(&self, token: &str) -> Result<bool> {
        let row = sqlx::query("SELECT uses_allowed, completed, pending, expiry_time FROM registration_tokens WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(false) };
        let uses: Option<i64> = r.try_get(0)?;
        let completed: i64 = r.try_get(1)?;
        let pending: i64 = r.try_get(2)?;
        let expiry: Option<i64> = r.try_get(3)?;
        if expiry.is_some_and(|e| e < now_ms()) {
            return Ok(false);
        }
        Ok(uses.is_none_or(|u| completed + pending < u))
    }

    pub async fn registration_token_used(&self, token: &str) -> Result<()> {
        sqlx::query("UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1")
            .bind(token)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
