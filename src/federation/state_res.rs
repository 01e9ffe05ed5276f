//! State resolution (v2; v2.1 for room version 12) through ruma, over events loaded from the
//! database first: ruma's callbacks are synchronous, so everything they may touch (the events of
//! the states, their auth chains) is loaded into a map and the algorithm runs in
//! `spawn_blocking`.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedEventId, events::StateEventType, room_version_rules::RoomVersionRules};

use crate::{
    error::{Error, Result},
    rooms::Pdu,
    storage::{Db, state::StateMap},
};

/// Resolves several states of one room into one. A single state (or identical ones) is returned
/// as it is. `pending` are events the states may name that are not stored yet (the event being
/// stored whose state is resolved with the room's).
pub async fn resolve(
    db: &Db,
    rules: &RoomVersionRules,
    states: Vec<StateMap>,
    pending: &[Pdu],
) -> Result<StateMap> {
    let mut states: Vec<StateMap> = states;
    states.dedup();
    if states.len() <= 1 {
        return Ok(states.pop().unwrap_or_default());
    }
    if states.windows(2).all(|w| w[0] == w[1]) {
        return Ok(states.swap_remove(0));
    }

    // Auth chains of each state, and every event the algorithm may look at.
    let mut auth_chains: Vec<HashSet<String>> = Vec::with_capacity(states.len());
    let mut all_ids: HashSet<String> = HashSet::new();
    for st in &states {
        let ids: Vec<String> = st.values().cloned().collect();
        let mut chain = db.auth_chain_ids(&ids).await?;
        // A pending event's auth chain: its auth events and theirs.
        for p in pending {
            if ids.iter().any(|i| i == p.event_id.as_str()) {
                let auth: Vec<String> = p.auth_events.iter().map(|a| a.to_string()).collect();
                chain.extend(db.auth_chain_ids(&auth).await?);
                chain.extend(auth);
            }
        }
        all_ids.extend(ids.iter().cloned());
        all_ids.extend(chain.iter().cloned());
        auth_chains.push(chain);
    }
    let ids: Vec<String> = all_ids.into_iter().collect();
    let mut events: HashMap<OwnedEventId, Pdu> = db
        .get_pdus(&ids)
        .await?
        .into_iter()
        .map(|p| (p.event_id.clone(), p))
        .collect();
    for p in pending {
        events.insert(p.event_id.clone(), p.clone());
    }

    let ruma_states: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
        .iter()
        .map(|st| {
            st.iter()
                .filter_map(|((t, k), id)| {
                    Some((
                        (StateEventType::from(t.as_str()), k.clone()),
                        OwnedEventId::try_from(id.as_str()).ok()?,
                    ))
                })
                .collect()
        })
        .collect();
    let ruma_chains: Vec<_> = auth_chains
        .iter()
        .map(|c| {
            c.iter()
                .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
                .collect()
        })
        .collect();
    let auth_rules = rules.authorization.clone();
    let res_rules = *rules
        .state_res
        .v2_rules()
        .ok_or_else(|| Error::internal("room version has no state resolution v2 rules"))?;

    let resolved = tokio::task::spawn_blocking(move || {
        ruma::state_res::resolve(
            &auth_rules,
            &res_rules,
            ruma_states.iter(),
            ruma_chains,
            |id| events.get(id).cloned(),
            |conflicted| Some(conflicted_subgraph(&events, conflicted)),
        )
    })
    .await
    .map_err(|e| Error::internal(format!("state resolution task: {e}")))?
    .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;

    Ok(resolved
        .into_iter()
        .map(|((t, k), id)| ((t.to_string(), k), id.to_string()))
        .collect())
}

/// The conflicted state subgraph (state resolution v2.1): events on an auth-event path from one
/// conflicted event to another, found among the loaded events.
fn conflicted_subgraph(
    events: &HashMap<OwnedEventId, Pdu>,
    conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>,
) -> ruma::state_res::utils::event_id_set::EventIdSet<OwnedEventId> {
    let conflicted_ids: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    // reaches[x]: some conflicted event is an auth ancestor of x (or x itself).
    let mut reaches: HashMap<&OwnedEventId, bool> = HashMap::new();
    fn reaches_conflicted<'a>(
        id: &'a OwnedEventId,
        events: &'a HashMap<OwnedEventId, Pdu>,
        conflicted: &HashSet<&OwnedEventId>,
        memo: &mut HashMap<&'a OwnedEventId, bool>,
        depth: usize,
    ) -> bool {
        if let Some(v) = memo.get(id) {
            return *v;
        }
        if conflicted.contains(id) {
            memo.insert(id, true);
            return true;
        }
        // Auth chains are shallow in practice; the depth bound keeps a malformed DAG finite.
        if depth > 10_000 {
            return false;
        }
        memo.insert(id, false);
        let mut found = false;
        if let Some(ev) = events.get(id) {
            for a in ev.auth_events.iter() {
                if reaches_conflicted(a, events, conflicted, memo, depth + 1) {
                    found = true;
                }
            }
        }
        memo.insert(id, found);
        found
    }
    let mut out: HashSet<OwnedEventId> = HashSet::new();
    // Walk up from each conflicted event; keep ancestors that themselves reach a conflicted one.
    let mut stack: Vec<&OwnedEventId> = conflicted_ids.iter().copied().collect();
    let mut seen: HashSet<&OwnedEventId> = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(ev) = events.get(id) {
            for a in ev.auth_events.iter() {
                if reaches_conflicted(a, events, &conflicted_ids, &mut reaches, 0) {
                    out.insert(a.clone());
                    stack.push(a);
                }
            }
        }
    }
    out.extend(conflicted_ids.into_iter().cloned());
    out.into_iter().collect()
}
