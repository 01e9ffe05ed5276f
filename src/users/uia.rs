//! User-interactive authentication sessions (in memory: a session lives minutes).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::error::{Error, Result};

#[derive(Default)]
pub struct UiaSessions {
    inner: Mutex<HashMap<String, UiaSession>>,
}

#[derive(Debug, Clone)]
struct UiaSession {
    completed: Vec<String>,
    created: Instant,
    /// What the session authorises (e.g. "register", "delete_device:@u:DEV"), so a session
    /// cannot be replayed for another operation.
    purpose: String,
}

/// One UIA flow: the stages that complete it.
pub type Flow = Vec<&'static str>;

impl UiaSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UiaSession>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new_session(&self, purpose: &str) -> String {
        let id = crate::users::random_token(24);
        let mut g = self.lock();
        g.retain(|_, s| s.created.elapsed() < Duration::from_secs(1800));
        g.insert(
            id.clone(),
            UiaSession {
                completed: Vec::new(),
                created: Instant::now(),
                purpose: purpose.to_owned(),
            },
        );
        id
    }

    pub fn complete_stage(&self, session: &str, purpose: &str, stage: &str) -> Result<()> {
        let mut g = self.lock();
        let s = g.get_mut(session).ok_or_else(|| {
            Error::new(
                axum::http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Unknown UIA session",
            )
        })?;
        if s.purpose != purpose {
            return Err(Error::forbidden(
                "UIA session was started for another request",
            ));
        }
        if !s.completed.iter().any(|c| c == stage) {
            s.completed.push(stage.to_owned());
        }
        Ok(())
    }

    pub fn completed(&self, session: &str) -> Vec<String> {
        self.lock()
            .get(session)
            .map(|s| s.completed.clone())
            .unwrap_or_default()
    }

    pub fn finish(&self, session: &str) {
        self.lock().remove(session);
    }

    /// The 401 body: flows, params, session, completed stages and an optional error.
    pub fn challenge(
        &self,
        flows: &[Flow],
        session: &str,
        params: Value,
        error: Option<(&str, &str)>,
    ) -> Error {
        let mut body = json!({
            "flows": flows.iter().map(|f| json!({"stages": f})).collect::<Vec<_>>(),
            "params": params,
            "session": session,
            "completed": self.completed(session),
        });
        if let (Some((code, msg)), Some(obj)) = (error, body.as_object_mut()) {
            obj.insert("errcode".into(), json!(code));
            obj.insert("error".into(), json!(msg));
        }
        Error::Uiaa(body)
    }
}

/// Whether some flow is fully completed.
pub fn flow_complete(flows: &[Flow], completed: &[String]) -> bool {
    flows
        .iter()
        .any(|f| f.iter().all(|stage| completed.iter().any(|c| c == stage)))
}
