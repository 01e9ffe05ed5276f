//! `POST /search`: room events holding every word of a search term, in the rooms the user is
//! in (or was in, up to when they left), newest first or by rank, with context, room state and
//! groupings as the spec describes.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::{Pdu, visibility::filter_visible};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::search::{SearchKey, SearchRoom},
    sync::filter::EventFilter,
};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;
/// Matches looked at for one query (ranked results are ranked within them).
const WINDOW: i64 = 500;
const MAX_CONTEXT: u64 = 20;
const MAX_TERM_WORDS: usize = 16;

/// Where the next page starts: below a stream position (`recent`), or at an offset into the
/// ranked matches below a fixed position (`rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    Recent { before: i64 },
    Rank { before: i64, offset: usize },
}

impl Batch {
    fn parse(token: &str) -> Result<Self> {
        let bad = || Error::invalid_param("'next_batch' is not a token this server gave");
        if let Some(rest) = token.strip_prefix("sr") {
            let (before, offset) = rest.split_once('_').ok_or_else(bad)?;
            return Ok(Batch::Rank {
                before: before.parse().map_err(|_| bad())?,
                offset: offset.parse().map_err(|_| bad())?,
            });
        }
        let before = token
            .strip_prefix("st")
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        Ok(Batch::Recent { before })
    }

    fn token(self) -> String {
        match self {
            Batch::Recent { before } => format!("st{before}"),
            Batch::Rank { before, offset } => format!("sr{before}_{offset}"),
        }
    }
}

fn words_of(term: &str) -> Vec<String> {
    let mut words: Vec<String> = term
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words.truncate(MAX_TERM_WORDS);
    words
}

/// How well an event's text matches: occurrences of the words, per word of text.
fn rank_of(text: &str, words: &[String]) -> f64 {
    let lower = text.to_lowercase();
    let hits: usize = words
        .iter()
        .map(|w| lower.matches(w.as_str()).count())
        .sum();
    let length = lower.split_whitespace().count().max(1);
    hits as f64 / (length as f64).sqrt()
}

fn text_of(pdu: &Pdu, keys: &[SearchKey]) -> String {
    let content = pdu.content_value();
    keys.iter()
        .filter_map(|k| {
            content
                .get(k.field())
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// Runs a search request body for a user.
pub async fn search(
    s: &Services,
    user_id: &str,
    body: &Value,
    next_batch: Option<&str>,
) -> Result<Value> {
    let categories = obj(body, "search_categories")
        .ok_or_else(|| Error::missing_param("'search_categories' is required"))?;
    let Some(criteria) = categories.get("room_events") else {
        return Ok(json!({"search_categories": {}}));
    };
    let criteria = criteria
        .as_object()
        .ok_or_else(|| Error::bad_json("'room_events' must be an object"))?;
    let term = match criteria.get("search_term") {
        Some(Value::String(t)) => t.as_str(),
        None => return Err(Error::missing_param("'search_term' is required")),
        Some(_) => return Err(Error::bad_json("'search_term' must be a string")),
    };
    let keys: Vec<SearchKey> = match criteria.get("keys") {
        None | Some(Value::Null) => vec![SearchKey::Body, SearchKey::Name, SearchKey::Topic],
        Some(Value::Array(a)) => a
            .iter()
            .map(|k| {
                k.as_str().and_then(SearchKey::parse).ok_or_else(|| {
                    Error::invalid_param(
                        "'keys' may hold content.body, content.name and content.topic",
                    )
                })
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::bad_json("'keys' must be an array")),
    };
    let by_rank = match criteria.get("order_by").and_then(Value::as_str) {
        None | Some("rank") => true,
        Some("recent") => false,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "'order_by' must be 'rank' or 'recent', not '{other}'"
            )));
        }
    };
    let filter_json = criteria.get("filter").cloned().unwrap_or(Value::Null);
    let filter = EventFilter::from_json(&filter_json);
    let limit = filter_json
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let batch = next_batch.map(Batch::parse).transpose()?;
    let top = match batch {
        None => s.db.stream_position() + 1,
        Some(Batch::Recent { before } | Batch::Rank { before, .. }) => before,
    };
    let words = words_of(term);

    // The rooms searched: joined ones, and left ones up to the leave.
    let memberships = s.db.memberships_of_user(user_id).await?;
    let mut rooms: Vec<SearchRoom> = Vec::new();
    for (room_id, membership, at, _) in &memberships {
        if !filter.allows_room(room_id) {
            continue;
        }
        let before = match membership.as_str() {
            "join" => top,
            "leave" | "ban" => top.min(*at + 1),
            _ => continue,
        };
        rooms.push(SearchRoom { room_id, before });
    }

    let mut matches: Vec<Pdu> = Vec::new();
    for key in &keys {
        matches.extend(s.db.search_events(&rooms, &words, *key, WINDOW).await?);
    }
    matches.sort_by_key(|p| std::cmp::Reverse(p.stream_ordering));
    matches.dedup_by(|a, b| a.event_id == b.event_id);
    matches.retain(|p| filter.allows(p));
    let matches = visible(s, user_id, matches).await?;

    // Order and page.
    let mut ranked: Vec<(f64, Pdu)> = matches
        .into_iter()
        .map(|p| (rank_of(&text_of(&p, &keys), &words), p))
        .collect();
    let count = ranked.len();
    let (page, next): (Vec<(f64, Pdu)>, Option<Batch>) = if by_rank {
        ranked.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.stream_ordering.cmp(&a.1.stream_ordering))
        });
        let offset = match batch {
            Some(Batch::Rank { offset, .. }) => offset,
            _ => 0,
        };
        let page: Vec<_> = ranked.into_iter().skip(offset).take(limit + 1).collect();
        let more = page.len() > limit;
        let page: Vec<_> = page.into_iter().take(limit).collect();
        let next = more.then_some(Batch::Rank {
            before: top,
            offset: offset + limit,
        });
        (page, next)
    } else {
        let more = ranked.len() > limit;
        let page: Vec<_> = ranked.into_iter().take(limit).collect();
        let next = page.last().filter(|_| more).map(|(_, p)| Batch::Recent {
            before: p.stream_ordering,
        });
        (page, next)
    };

    let context = criteria.get("event_context").and_then(Value::as_object);
    let mut results = Vec::with_capacity(page.len());
    for (rank, pdu) in &page {
        let mut result = json!({"rank": rank, "result": pdu.to_client(None)});
        if let Some(c) = context {
            result["context"] = event_context(s, user_id, pdu, c).await?;
        }
        results.push(result);
    }
    let mut out = json!({
        "count": count,
        "highlights": words,
        "results": results,
    });
    if let Some(n) = next {
        out["next_batch"] = json!(n.token());
    }
    if criteria.get("include_state").and_then(Value::as_bool) == Some(true) {
        let mut state = Map::new();
        for room in page.iter().map(|(_, p)| p.room_id.to_string()) {
            if state.contains_key(&room) {
                continue;
            }
            let ids: Vec<String> = s.db.current_state_map(&room).await?.into_values().collect();
            let pdus = s.db.get_pdus(&ids).await?;
            state.insert(
                room,
                Value::Array(pdus.iter().map(|p| p.to_client(None)).collect()),
            );
        }
        out["state"] = Value::Object(state);
    }
    if let Some(groupings) = criteria.get("groupings").and_then(Value::as_object) {
        out["groups"] = groups(groupings, &page);
    }
    Ok(json!({"search_categories": {"room_events": out}}))
}

/// Keeps the events the user may see (the visibility check works room by room).
async fn visible(s: &Services, user_id: &str, events: Vec<Pdu>) -> Result<Vec<Pdu>> {
    let mut by_room: BTreeMap<String, Vec<Pdu>> = BTreeMap::new();
    for p in events {
        by_room.entry(p.room_id.to_string()).or_default().push(p);
    }
    let mut out = Vec::new();
    for (_, room_events) in by_room {
        out.extend(filter_visible(&s.db, user_id, room_events).await?);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.stream_ordering));
    Ok(out)
}

async fn event_context(
    s: &Services,
    user_id: &str,
    pdu: &Pdu,
    c: &Map<String, Value>,
) -> Result<Value> {
    let limit = |key: &str| {
        c.get(key)
            .and_then(Value::as_u64)
            .unwrap_or(5)
            .min(MAX_CONTEXT) as i64
    };
    let room = pdu.room_id.as_str();
    let before =
        s.db.room_messages(room, pdu.stream_ordering, true, limit("before_limit"))
            .await?;
    let after =
        s.db.room_messages(room, pdu.stream_ordering + 1, false, limit("after_limit"))
            .await?;
    let before = filter_visible(&s.db, user_id, before).await?;
    let after = filter_visible(&s.db, user_id, after).await?;
    let start = before
        .last()
        .map_or(pdu.stream_ordering, |p| p.stream_ordering);
    let end = after
        .last()
        .map_or(pdu.stream_ordering + 1, |p| p.stream_ordering + 1);
    let mut out = json!({
        "events_before": before.iter().map(|p| p.to_client(None)).collect::<Vec<_>>(),
        "events_after": after.iter().map(|p| p.to_client(None)).collect::<Vec<_>>(),
        "start": crate::sync::token::position_token(start),
        "end": crate::sync::token::position_token(end),
    });
    if c.get("include_profile").and_then(Value::as_bool) == Some(true) {
        let mut profiles = Map::new();
        for sender in before
            .iter()
            .chain(after.iter())
            .chain(std::iter::once(pdu))
            .map(|p| p.sender.to_string())
        {
            if profiles.contains_key(&sender) {
                continue;
            }
            let member = super::current_state_content(&s.db, room, "m.room.member", &sender)
                .await?
                .unwrap_or_default();
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(v) = member.get(field).filter(|v| v.is_string()) {
                    profile.insert(field.into(), v.clone());
                }
            }
            profiles.insert(sender, Value::Object(profile));
        }
        out["profile_info"] = Value::Object(profiles);
    }
    Ok(out)
}

/// `groups`: the page's results by room or by sender.
fn groups(groupings: &Map<String, Value>, page: &[(f64, Pdu)]) -> Value {
    let mut out = Map::new();
    let keys = groupings
        .get("group_by")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for g in keys {
        let Some(key) = g.get("key").and_then(Value::as_str) else {
            continue;
        };
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for (_, p) in page {
            let k = match key {
                "room_id" => p.room_id.to_string(),
                "sender" => p.sender.to_string(),
                _ => continue,
            };
            if !groups.contains_key(&k) {
                order.push(k.clone());
            }
            groups.entry(k).or_default().push(p.event_id.to_string());
        }
        let mut by_key = Map::new();
        for (i, k) in order.iter().enumerate() {
            by_key.insert(
                k.clone(),
                json!({"order": i + 1, "results": groups.remove(k).unwrap_or_default()}),
            );
        }
        out.insert(key.to_owned(), Value::Object(by_key));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        for b in [
            Batch::Recent { before: 42 },
            Batch::Rank {
                before: 7,
                offset: 20,
            },
        ] {
            assert_eq!(Batch::parse(&b.token()).ok(), Some(b));
        }
        assert!(Batch::parse("t12").is_err());
    }

    #[test]
    fn words_are_lowercased_and_deduplicated() {
        assert_eq!(words_of("Lunch, lunch! Today?"), ["lunch", "today"]);
        assert!(
            rank_of("lunch lunch today", &words_of("lunch"))
                > rank_of("lunch today and more words", &words_of("lunch"))
        );
    }
}
