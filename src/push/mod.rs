//! Push rules: each user's ruleset (the spec's server-default rules plus their own), rule
//! editing, and rule evaluation for unread notification counts.
//!
//! The ruleset is stored as the user's global `m.push_rules` account data (`{"global": …}`),
//! which is where clients read it in `/sync`. Only the default rules' `enabled` and `actions`
//! are kept from what is stored: the rules themselves always come from the current server
//! default, so a newer default set reaches existing users.

pub mod gateway;
pub mod notifications;
pub mod pushers;

use std::collections::{BTreeMap, HashMap};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::room::power_levels::{
        RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
    },
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewPushRule, PushConditionPowerLevelsCtx,
        PushConditionRoomCtx, RemovePushRuleError, RuleKind, Ruleset,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    rooms::{Pdu, room_rules},
    services::Services,
    storage::{Db, events::relation_of},
};

/// The account data type the ruleset is stored under.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// At most this many of the newest unread events are evaluated per room.
pub const MAX_EVALUATED: i64 = 300;

/// A stored `m.push_rules` content as a ruleset merged with the current server default.
fn ruleset_from_content(user_id: &UserId, content: Option<&Value>) -> Ruleset {
    let default = Ruleset::server_default(user_id);
    let Some(global) = content.and_then(|c| c.get("global")) else {
        return default;
    };
    match serde_json::from_value::<Ruleset>(global.clone()) {
        Ok(mut stored) => {
            stored.update_with_server_default(default);
            stored
        }
        Err(e) => {
            tracing::warn!("stored push rules of {user_id} unreadable, using defaults: {e}");
            default
        }
    }
}

/// A ruleset as the client-server API shows it: every kind present, as an array.
pub fn ruleset_json(ruleset: &Ruleset) -> Result<Value> {
    let mut v = serde_json::to_value(ruleset)?;
    if let Value::Object(m) = &mut v {
        for kind in ["override", "content", "room", "sender", "underride"] {
            m.entry(kind).or_insert_with(|| json!([]));
        }
    }
    Ok(v)
}

fn ruleset_content(ruleset: &Ruleset) -> Result<Value> {
    Ok(json!({ "global": ruleset_json(ruleset)? }))
}

/// The user's push ruleset.
pub async fn ruleset(db: &Db, user_id: &UserId) -> Result<Ruleset> {
    let content = db
        .account_data(user_id.as_str(), None, PUSH_RULES_TYPE)
        .await?;
    Ok(ruleset_from_content(user_id, content.as_ref()))
}

/// The `m.push_rules` content for a user who never changed their rules (for initial sync).
pub fn default_rules_content(user_id: &UserId) -> Result<Value> {
    ruleset_content(&Ruleset::server_default(user_id))
}

/// Adds the server-default `m.push_rules` event to a sync's global account data events when the
/// user never changed their rules (clients read the rules from there).
pub fn add_default_rules_if_unset(user_id: &str, events: &mut Vec<Value>) -> Result<()> {
    if events.iter().any(|e| e["type"] == PUSH_RULES_TYPE) {
        return Ok(());
    }
    let user_id = <&UserId>::try_from(user_id).map_err(Error::internal)?;
    events.push(json!({"type": PUSH_RULES_TYPE, "content": default_rules_content(user_id)?}));
    Ok(())
}

/// Changes the user's ruleset with `f` atomically, stores it (visible in `/sync` as account
/// data) and wakes the user's long polls.
async fn update<T>(
    s: &Services,
    user_id: &UserId,
    f: impl FnOnce(&mut Ruleset) -> Result<T>,
) -> Result<T> {
    let (pos, out) =
        s.db.update_account_data(user_id.as_str(), None, PUSH_RULES_TYPE, |current| {
            let mut rules = ruleset_from_content(user_id, current.as_ref());
            let out = f(&mut rules)?;
            Ok((Some(ruleset_content(&rules)?), out))
        })
        .await?;
    if let Some(pos) = pos {
        s.notifier.notify_users(&[user_id.to_string()], pos);
    }
    Ok(out)
}

fn unknown_rule() -> Error {
    Error::not_found("Unknown push rule")
}

fn check_kind(kind: &RuleKind) -> Result<()> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        _ => Err(Error::invalid_param("Unknown push rule kind")),
    }
}

/// One rule as the client-server API shows it.
pub fn rule_json(rule: AnyPushRuleRef<'_>) -> Result<Value> {
    let rule = ruma::api::client::push::PushRule::from(rule);
    Ok(serde_json::to_value(rule)?)
}

/// A rule of the user's ruleset, as JSON.
pub async fn get_rule(db: &Db, user_id: &UserId, kind: &RuleKind, rule_id: &str) -> Result<Value> {
    check_kind(kind)?;
    let rules = ruleset(db, user_id).await?;
    let rule = rules.get(kind.clone(), rule_id).ok_or_else(unknown_rule)?;
    rule_json(rule)
}

/// Whether a rule is enabled, and its actions.
pub async fn rule_state(
    db: &Db,
    user_id: &UserId,
    kind: &RuleKind,
    rule_id: &str,
) -> Result<(bool, Vec<Action>)> {
    check_kind(kind)?;
    let rules = ruleset(db, user_id).await?;
    let rule = rules.get(kind.clone(), rule_id).ok_or_else(unknown_rule)?;
    Ok((rule.enabled(), rule.actions().to_vec()))
}

/// Adds or replaces a user-defined rule, placed relative to `before`/`after` when given.
pub async fn put_rule(
    s: &Services,
    user_id: &UserId,
    rule: NewPushRule,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<()> {
    let kind = rule.kind();
    let rule_id = rule.rule_id().to_owned();
    if rule_id.is_empty() {
        return Err(Error::invalid_param("Empty push rule id"));
    }
    update(s, user_id, |rules| {
        if rules
            .get(kind.clone(), &rule_id)
            .is_some_and(|r| r.is_server_default())
        {
            return Err(Error::invalid_param(
                "Server-default push rules cannot be replaced",
            ));
        }
        rules.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => {
                Error::not_found("The before or after rule does not exist")
            }
            InsertPushRuleError::ServerDefaultRuleId => {
                Error::invalid_param("Rule ids starting with '.' are reserved")
            }
            InsertPushRuleError::InvalidRuleId => Error::invalid_param("Invalid push rule id"),
            InsertPushRuleError::RelativeToServerDefaultRule => {
                Error::bad_json("A rule cannot be placed relative to a server-default rule")
            }
            InsertPushRuleError::BeforeHigherThanAfter => {
                Error::bad_json("'before' has a higher priority than 'after'")
            }
            _ => Error::invalid_param(e.to_string()),
        })
    })
    .await
}

/// Deletes a user-defined rule.
pub async fn delete_rule(
    s: &Services,
    user_id: &UserId,
    kind: &RuleKind,
    rule_id: &str,
) -> Result<()> {
    check_kind(kind)?;
    update(s, user_id, |rules| {
        rules.remove(kind.clone(), rule_id).map_err(|e| match e {
            RemovePushRuleError::ServerDefault => {
                Error::invalid_param("Server-default push rules cannot be deleted")
            }
            _ => unknown_rule(),
        })
    })
    .await
}

pub async fn set_enabled(
    s: &Services,
    user_id: &UserId,
    kind: &RuleKind,
    rule_id: &str,
    enabled: bool,
) -> Result<()> {
    check_kind(kind)?;
    update(s, user_id, |rules| {
        rules
            .set_enabled(kind.clone(), rule_id, enabled)
            .map_err(|_| unknown_rule())
    })
    .await
}

pub async fn set_actions(
    s: &Services,
    user_id: &UserId,
    kind: &RuleKind,
    rule_id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    check_kind(kind)?;
    update(s, user_id, |rules| {
        rules
            .set_actions(kind.clone(), rule_id, actions)
            .map_err(|_| unknown_rule())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// What a user's rules say about one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub notify: bool,
    pub highlight: bool,
}

impl Verdict {
    pub fn from_actions(actions: &[Action]) -> Self {
        let notify = actions.iter().any(Action::should_notify);
        Verdict {
            notify,
            highlight: notify && actions.iter().any(Action::is_highlight),
        }
    }
}

/// The user's rules and the room context to evaluate them in (built once per room).
#[derive(Clone)]
pub struct Evaluator {
    rules: Ruleset,
    ctx: PushConditionRoomCtx,
}

impl Evaluator {
    pub fn new(rules: Ruleset, ctx: PushConditionRoomCtx) -> Self {
        Evaluator { rules, ctx }
    }

    /// Loads the user's rules and the room's current member count, the user's display name and
    /// the power levels.
    pub async fn for_room(db: &Db, room_id: &RoomId, user_id: &UserId) -> Result<Self> {
        let rules = ruleset(db, user_id).await?;
        let ctx = room_ctx(db, room_id, user_id).await?;
        Ok(Evaluator::new(rules, ctx))
    }

    /// Evaluates an event for the user.
    pub async fn evaluate(&self, event: &Pdu) -> Result<Verdict> {
        Ok(Verdict::from_actions(&self.actions(event).await?))
    }

    /// The actions the user's rules give an event.
    pub async fn actions(&self, event: &Pdu) -> Result<Vec<Action>> {
        let raw: Raw<Value> = Raw::from_json(event.push_json()?);
        Ok(self.rules.get_actions(&raw, &self.ctx).await.to_vec())
    }
}

async fn state_pdu(db: &Db, room_id: &str, kind: &str, key: &str) -> Result<Option<Pdu>> {
    match db.current_state_event_id(room_id, kind, key).await? {
        Some(id) => db.get_pdu(&id).await,
        None => Ok(None),
    }
}

/// The push-condition context of a room for a user, from the room's current state.
pub async fn room_ctx(db: &Db, room_id: &RoomId, user_id: &UserId) -> Result<PushConditionRoomCtx> {
    let rid = room_id.as_str();
    let member_count = db.joined_member_count(rid, "join").await?;
    let display_name = state_pdu(db, rid, "m.room.member", user_id.as_str())
        .await?
        .and_then(|p| {
            p.content_value()
                .get("displayname")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| user_id.localpart().to_owned());
    let ctx = PushConditionRoomCtx::new(
        OwnedRoomId::from(room_id),
        UInt::try_from(member_count.max(0) as u64).unwrap_or_default(),
        OwnedUserId::from(user_id),
        display_name,
    );
    let Ok((_, rules)) = room_rules(db, room_id).await else {
        return Ok(ctx);
    };
    let mut creators: Vec<OwnedUserId> = Vec::new();
    if let Some(create) = state_pdu(db, rid, "m.room.create", "").await? {
        creators.push(create.sender.clone());
        if let Some(extra) = create
            .content_value()
            .get("additional_creators")
            .and_then(Value::as_array)
        {
            creators.extend(
                extra
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|u| OwnedUserId::try_from(u).ok()),
            );
        }
    }
    let source = match state_pdu(db, rid, "m.room.power_levels", "").await? {
        Some(p) => match serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()) {
            Ok(c) => RoomPowerLevelsSource::Original(c),
            Err(_) => RoomPowerLevelsSource::None,
        },
        None => RoomPowerLevelsSource::None,
    };
    let levels = RoomPowerLevels::new(source, &rules.authorization, creators);
    Ok(ctx.with_power_levels(PushConditionPowerLevelsCtx::from(levels)))
}

/// Unread notification counts of a user in a room.
#[derive(Debug, Default, Clone)]
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
    /// Per thread root (only filled when counted per thread).
    pub threads: BTreeMap<String, (u64, u64)>,
}

impl UnreadCounts {
    /// `unread_notifications` of a joined room in `/sync`.
    pub fn room_json(&self) -> Value {
        json!({"notification_count": self.notifications, "highlight_count": self.highlights})
    }

    /// `unread_thread_notifications` of a joined room in `/sync`.
    pub fn threads_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .threads
            .iter()
            .map(|(root, (n, h))| {
                (
                    root.clone(),
                    json!({"notification_count": n, "highlight_count": h}),
                )
            })
            .collect();
        Value::Object(map)
    }
}

/// Unread counts already worked out, per (user, room, counted per thread): `/sync` evaluates
/// only the events that arrived since, instead of every unread event on every sync.
#[derive(Default)]
pub struct UnreadCache {
    inner: std::sync::Mutex<HashMap<(String, String, bool), CachedUnread>>,
}

#[derive(Clone)]
struct CachedUnread {
    joined_at: i64,
    receipts: HashMap<String, i64>,
    /// Every candidate event up to this stream position is in `counts`.
    evaluated_to: i64,
    counts: UnreadCounts,
    /// The evaluator last used, with the state snapshot it was made for and the stream
    /// position it was made at (it is used again while the room's state and the user's
    /// account data, where the push rules live, have not changed).
    evaluator: Option<(i64, i64, std::sync::Arc<Evaluator>)>,
}

/// Entries kept before the cache starts over.
const UNREAD_CACHE_MAX: usize = 50_000;

impl UnreadCache {
    fn get(&self, key: &(String, String, bool)) -> Option<CachedUnread> {
        self.inner.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: (String, String, bool), entry: CachedUnread) {
        if let Ok(mut m) = self.inner.lock() {
            if m.len() >= UNREAD_CACHE_MAX {
                m.clear();
            }
            m.insert(key, entry);
        }
    }

    /// Forgets a room's counts (an event in it was redacted, so counted events may no longer
    /// count).
    pub fn invalidate_room(&self, room_id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|(_, r, _), _| r != room_id);
        }
    }
}

/// Candidate events for [`unread_counts`] read ahead, for many rooms in one query (`/sync`).
pub struct Prefetched {
    /// The stream position they were read after (from [`unread_reads_after`]).
    pub after: i64,
    /// The stream position taken before they were read: everything committed up to it was
    /// seen by the read.
    pub horizon: i64,
    /// Newest first, at most [`MAX_EVALUATED`].
    pub events: Vec<Pdu>,
}

enum UnreadPlan {
    /// The cached counts are current.
    Current(UnreadCounts),
    /// Events after `after` still have to be evaluated and added to `counts`.
    ReadAfter {
        counts: UnreadCounts,
        after: i64,
        evaluator: Option<(i64, i64, std::sync::Arc<Evaluator>)>,
    },
}

/// Whose unread counts in which room: the user, the room, the user's join position and read
/// positions there (by thread, `""` for unthreaded receipts), and whether threads are counted
/// apart.
pub struct UnreadOf<'a> {
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub joined_at: i64,
    pub receipts: &'a HashMap<String, i64>,
    pub per_thread: bool,
}

impl UnreadOf<'_> {
    fn key(&self) -> (String, String, bool) {
        (
            self.user_id.to_owned(),
            self.room_id.to_owned(),
            self.per_thread,
        )
    }
}

fn unread_plan(s: &Services, of: &UnreadOf<'_>) -> UnreadPlan {
    let unthreaded = of.receipts.get("").copied().unwrap_or(0);
    let floor = of.joined_at.max(unthreaded);
    match s.unread.get(&of.key()) {
        Some(c) if c.joined_at == of.joined_at && c.receipts == *of.receipts => {
            if s.notifier.room_quiet_since(of.room_id, c.evaluated_to) {
                return UnreadPlan::Current(c.counts);
            }
            UnreadPlan::ReadAfter {
                counts: c.counts,
                after: c.evaluated_to.max(floor),
                evaluator: c.evaluator,
            }
        }
        c => UnreadPlan::ReadAfter {
            counts: UnreadCounts::default(),
            after: floor,
            evaluator: c.and_then(|c| c.evaluator),
        },
    }
}

/// Where [`unread_counts`] would start reading the room's events, or `None` when the
/// counts it has cached are current and it reads nothing.
pub fn unread_reads_after(s: &Services, of: &UnreadOf<'_>) -> Option<i64> {
    match unread_plan(s, of) {
        UnreadPlan::Current(_) => None,
        UnreadPlan::ReadAfter { after, .. } => Some(after),
    }
}

/// Counts the events after the user's read receipts (and after `joined_at`) that the user's
/// push rules make notify / highlight. Threaded receipts apply to their thread (`main` to the
/// main timeline), unthreaded ones to everything. With `per_thread`, events in threads are
/// counted under their thread root instead of the room. Only the newest [`MAX_EVALUATED`]
/// events are looked at. `receipts` are the user's read positions in the room by thread.
///
/// Counts are cached: while the user's receipts and membership stay the same, only events
/// newer than those already counted are evaluated, and none at all when the room is quiet.
pub async fn unread_counts(
    s: &Services,
    of: &UnreadOf<'_>,
    prefetched: Option<Prefetched>,
) -> Result<UnreadCounts> {
    let db = &s.db;
    let &UnreadOf {
        room_id,
        user_id,
        joined_at,
        receipts,
        per_thread,
    } = of;
    let (mut counts, after, previous_evaluator) = match unread_plan(s, of) {
        UnreadPlan::Current(counts) => return Ok(counts),
        UnreadPlan::ReadAfter {
            counts,
            after,
            evaluator,
        } => (counts, after, evaluator),
    };
    let room = <&RoomId>::try_from(room_id).map_err(Error::internal)?;
    let user = <&UserId>::try_from(user_id).map_err(Error::internal)?;
    let (horizon, events) = match prefetched {
        Some(p) if p.after == after => (p.horizon, p.events),
        _ => {
            // Everything committed up to here is seen by the query below.
            let horizon = db.stream_position();
            let events = db
                .notification_candidates(room_id, user_id, after, MAX_EVALUATED)
                .await?;
            (horizon, events)
        }
    };
    let evaluated_to = events
        .first()
        .map_or(horizon, |p| p.stream_ordering.max(horizon))
        .max(after);
    let mut evaluator = previous_evaluator;
    if let Some(newest) = events.first() {
        let snapshot = newest.state_after.unwrap_or(-1);
        let eval = match &evaluator {
            Some((snap, made_at, e))
                if *snap == snapshot
                    && !db.changed_since(crate::storage::StreamKind::AccountData, *made_at) =>
            {
                e.clone()
            }
            _ => {
                let made_at = db.stream_position();
                let e = std::sync::Arc::new(Evaluator::for_room(db, room, user).await?);
                evaluator = Some((snapshot, made_at, e.clone()));
                e
            }
        };
        for pdu in &events {
            let thread = relation_of(pdu).thread_id;
            let read = receipts
                .get(thread.as_deref().unwrap_or("main"))
                .copied()
                .unwrap_or(0);
            if pdu.stream_ordering <= read {
                continue;
            }
            let v = eval.evaluate(pdu).await?;
            if !v.notify {
                continue;
            }
            match thread {
                Some(root) if per_thread => {
                    let e = counts.threads.entry(root).or_default();
                    e.0 += 1;
                    e.1 += v.highlight as u64;
                }
                _ => {
                    counts.notifications += 1;
                    counts.highlights += v.highlight as u64;
                }
            }
        }
    }
    s.unread.put(
        of.key(),
        CachedUnread {
            joined_at,
            receipts: receipts.clone(),
            evaluated_to,
            counts: counts.clone(),
            evaluator,
        },
    );
    Ok(counts)
}
