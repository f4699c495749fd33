//! The queue's rules over an in-memory [`QueueTx`]: plain rows in a `Vec`, no database. The
//! fake answers each statement the simple way (its `heads` is every queued delivery of the
//! plugin: per-user order is the drivers' SQL, checked by the store's contract suite); what
//! is checked here is what the rules decide with the answers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::attempt::{Attempt, AttemptResult};

#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    id: String,
    plugin: String,
    status: Status,
    attempts: i64,
    replay: bool,
    raw: String,
    event_type: String,
    began: bool,
    exempt: bool,
    lease_token: Option<String>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
}

/// The store as plain rows: deliveries, their history, and each plugin's last release.
#[derive(Default)]
struct Rows {
    deliveries: Vec<Row>,
    history: Vec<(String, i64, String, Option<String>)>,
    resets: HashMap<String, String>,
}

impl Rows {
    fn add(&mut self, plugin: &str, event_type: &str) -> String {
        let seq = i64::try_from(self.deliveries.len()).unwrap() + 1;
        let id = format!("d{seq}");
        let raw = json!({"uuid": format!("e{seq}"), "eventType": event_type, "published": "2030-01-01T00:00:00Z"});
        self.deliveries.push(Row {
            seq,
            id: id.clone(),
            plugin: plugin.into(),
            status: Status::Pending,
            attempts: 0,
            replay: false,
            raw: raw.to_string(),
            event_type: event_type.into(),
            began: false,
            exempt: false,
            lease_token: None,
            last_error: None,
            next_attempt_at: None,
        });
        id
    }

    fn get(&mut self, id: &str) -> Option<&mut Row> {
        self.deliveries.iter_mut().find(|d| d.id == id)
    }

    fn status(&self, id: &str) -> Status {
        self.deliveries.iter().find(|d| d.id == id).unwrap().status
    }

    fn set_status(&mut self, plugin: &str, from: Status, to: Status) -> usize {
        let mut n = 0;
        for d in self.deliveries.iter_mut().filter(|d| d.plugin == plugin && d.status == from) {
            d.status = to;
            n += 1;
        }
        n
    }
}

impl QueueTx for Rows {
    fn plugins_with_work(&mut self) -> Result<Vec<String>, StoreError> {
        let mut plugins: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| matches!(d.status, Status::Pending | Status::Retrying))
            .map(|d| d.plugin.clone())
            .collect();
        plugins.sort();
        plugins.dedup();
        Ok(plugins)
    }

    fn running_here(&mut self, _host_id: &str) -> Result<HashMap<String, usize>, StoreError> {
        let mut running = HashMap::new();
        for d in self.deliveries.iter().filter(|d| d.status == Status::Running) {
            *running.entry(d.plugin.clone()).or_insert(0) += 1;
        }
        Ok(running)
    }

    fn heads(&mut self, plugin: &str, _now: &str, room: usize) -> Result<Vec<Candidate>, StoreError> {
        Ok(self
            .deliveries
            .iter()
            .filter(|d| d.plugin == plugin && matches!(d.status, Status::Pending | Status::Retrying))
            .take(room)
            .map(|d| Candidate {
                seq: d.seq,
                id: d.id.clone(),
                plugin: d.plugin.clone(),
                attempts: u32::try_from(d.attempts).unwrap(),
                replay: d.replay,
                raw: d.raw.clone(),
                event_type: d.event_type.clone(),
                began: d.began,
                exempt: d.exempt,
            })
            .collect())
    }

    fn guard_reset_at(&mut self, plugin: &str) -> Result<Option<String>, StoreError> {
        Ok(self.resets.get(plugin).cloned())
    }

    fn guarded_starts_since(&mut self, plugin: &str, _since: &str, types: &[String]) -> Result<u64, StoreError> {
        let began = self
            .deliveries
            .iter()
            .filter(|d| d.plugin == plugin && d.began && !d.exempt && types.contains(&d.event_type));
        Ok(u64::try_from(began.count()).unwrap())
    }

    fn any_held(&mut self, plugin: &str) -> Result<bool, StoreError> {
        Ok(self.deliveries.iter().any(|d| d.plugin == plugin && d.status == Status::Held))
    }

    fn mark_running(&mut self, id: &str, _host: &str, token: &str, until: &str, _now: &str) -> Result<(), StoreError> {
        let d = self.get(id).unwrap();
        (d.status, d.lease_token, d.began, d.next_attempt_at) =
            (Status::Running, Some(token.into()), true, Some(until.into()));
        Ok(())
    }

    fn hold(&mut self, id: &str, _now: &str) -> Result<(), StoreError> {
        self.get(id).unwrap().status = Status::Held;
        Ok(())
    }

    fn bury(&mut self, id: &str, error: &str, _now: &str) -> Result<(), StoreError> {
        let d = self.get(id).unwrap();
        (d.status, d.last_error) = (Status::Dead, Some(error.into()));
        Ok(())
    }

    fn renew(&mut self, id: &str, token: &str, until: &str, _now: &str) -> Result<usize, StoreError> {
        match self.get(id) {
            Some(d) if d.status == Status::Running && d.lease_token.as_deref() == Some(token) => {
                d.next_attempt_at = Some(until.into());
                Ok(1)
            }
            _ => Ok(0),
        }
    }

    fn release(&mut self, id: &str, token: &str, _now: &str) -> Result<usize, StoreError> {
        match self.get(id) {
            Some(d) if d.status == Status::Running && d.lease_token.as_deref() == Some(token) => {
                (d.status, d.lease_token) = (Status::Pending, None);
                Ok(1)
            }
            _ => Ok(0),
        }
    }

    fn release_expired(&mut self, _before: &str, _now: &str) -> Result<usize, StoreError> {
        unreachable!("a sweep is one statement: nothing to decide")
    }

    fn release_host(&mut self, _host_id: &str, _now: &str) -> Result<usize, StoreError> {
        unreachable!("a sweep is one statement: nothing to decide")
    }

    fn lease_row(&mut self, id: &str) -> Result<Option<LeaseRow>, StoreError> {
        Ok(self.get(id).map(|d| LeaseRow {
            status: d.status.as_str().into(),
            lease_token: d.lease_token.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            replay: d.replay,
        }))
    }

    fn last_attempt_number(&mut self, id: &str) -> Result<i64, StoreError> {
        Ok(self.history.iter().filter(|h| h.0 == id).map(|h| h.1).max().unwrap_or(0))
    }

    fn record_attempt(&mut self, a: &AttemptRow<'_>) -> Result<(), StoreError> {
        self.history.push((a.delivery_id.into(), a.number, a.result.into(), a.error.clone()));
        Ok(())
    }

    fn finish(&mut self, f: &Finished<'_>) -> Result<(), StoreError> {
        let d = self.get(f.delivery_id).unwrap();
        d.status = f.landing.status;
        d.attempts = f.attempts;
        d.next_attempt_at.clone_from(&f.landing.next_attempt_at);
        d.last_error.clone_from(&f.landing.last_error);
        d.replay = f.landing.replay;
        d.lease_token = None;
        Ok(())
    }

    fn done_later(
        &mut self,
        _plugin: &str,
        _subject: &str,
        _published_key: &str,
        _uuid: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(vec![
            ("other-group".into(), "group.user_membership.add".into(), r#"["g2"]"#.into()),
            ("same-group".into(), "group.user_membership.remove".into(), r#"["g1"]"#.into()),
            ("deactivated".into(), "user.lifecycle.deactivate".into(), "[]".into()),
        ])
    }

    fn status_of(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(id).map(|d| d.status.as_str().to_owned()))
    }

    fn requeue_for_replay(&mut self, id: &str, _now: &str) -> Result<(), StoreError> {
        let d = self.get(id).unwrap();
        (d.status, d.replay, d.exempt) = (Status::Pending, true, true);
        Ok(())
    }

    fn requeue_held(&mut self, plugin: &str, _now: &str) -> Result<usize, StoreError> {
        for d in self.deliveries.iter_mut().filter(|d| d.plugin == plugin && d.status == Status::Held) {
            d.exempt = true;
        }
        Ok(self.set_status(plugin, Status::Held, Status::Pending))
    }

    fn reset_guard(&mut self, plugin: &str, now: &str) -> Result<(), StoreError> {
        self.resets.insert(plugin.into(), now.into());
        Ok(())
    }

    fn discard_held(&mut self, plugin: &str, _now: &str) -> Result<usize, StoreError> {
        Ok(self.set_status(plugin, Status::Held, Status::Discarded))
    }
}

const REMOVE: &str = "group.user_membership.remove";
const ADD: &str = "group.user_membership.add";
const LEASE: Duration = Duration::from_secs(30);

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn unlimited(_: &str) -> usize {
    100
}

fn guard_of(max: u32) -> impl Fn(&str) -> Option<GuardRule> + Sync {
    move |plugin| {
        (plugin == "guarded").then(|| GuardRule {
            event_types: vec![REMOVE.into()],
            max_per_window: max,
            window: Duration::from_secs(600),
        })
    }
}

fn claim_ids(rows: &mut Rows, limit: usize, max_running: &(dyn Fn(&str) -> usize + Sync)) -> Vec<String> {
    let batch = claim(rows, "host", t0(), LEASE, limit, max_running, &|_| None).unwrap();
    batch.claims.into_iter().map(|c| c.delivery_id).collect()
}

#[test]
fn a_claim_takes_the_oldest_first_within_each_plugins_room_and_the_limit() {
    let mut rows = Rows::default();
    let a1 = rows.add("a", ADD);
    let b1 = rows.add("b", ADD);
    let a2 = rows.add("a", ADD);
    let _a3 = rows.add("a", ADD);
    let b2 = rows.add("b", ADD);
    let two_of_a = |p: &str| if p == "a" { 2 } else { 100 };
    assert_eq!(claim_ids(&mut rows, 10, &two_of_a), [a1.clone(), b1.clone(), a2.clone(), b2.clone()]);
    assert!([a1, b1, a2, b2].iter().all(|id| rows.status(id) == Status::Running));
    // Nothing left in a's room (2 running), and b has nothing queued.
    assert!(claim_ids(&mut rows, 10, &two_of_a).is_empty());
    let mut rows = Rows::default();
    let first = rows.add("a", ADD);
    rows.add("a", ADD);
    assert_eq!(claim_ids(&mut rows, 1, &unlimited), [first]);
    assert!(claim_ids(&mut rows, 0, &unlimited).is_empty(), "limit 0 claims nothing");
}

#[test]
fn the_guard_holds_past_its_limit_trips_once_and_lets_replays_and_other_types_run() {
    let mut rows = Rows::default();
    let ids: Vec<String> = (0..4).map(|_| rows.add("guarded", REMOVE)).collect();
    let other = rows.add("guarded", ADD);
    let replayed = rows.add("guarded", REMOVE);
    rows.get(&replayed).unwrap().replay = true;
    let unguarded = rows.add("free", REMOVE);

    let batch = claim(&mut rows, "host", t0(), LEASE, 10, &unlimited, &guard_of(2)).unwrap();
    let claimed: Vec<&str> = batch.claims.iter().map(|c| c.delivery_id.as_str()).collect();
    assert_eq!(claimed, [&ids[0], &ids[1], &other, &replayed, &unguarded]);
    let held: Vec<(&str, bool)> = batch.held.iter().map(|h| (h.delivery_id.as_str(), h.trips)).collect();
    assert_eq!(held, [(ids[2].as_str(), true), (ids[3].as_str(), false)]);
    assert_eq!(rows.status(&ids[2]), Status::Held);

    // While anything is held, the guard stays tripped: a new removal is held, not counted.
    let late = rows.add("guarded", REMOVE);
    let batch = claim(&mut rows, "host", t0(), LEASE, 10, &unlimited, &guard_of(100)).unwrap();
    assert!(batch.claims.is_empty());
    assert_eq!(batch.held[0].delivery_id, late);
    assert!(!batch.held[0].trips, "it tripped already");

    // A release runs them all, exempt from the guard, and restarts the window.
    assert_eq!(release_held(&mut rows, "guarded", t0()).unwrap(), 3);
    assert_eq!(rows.resets.get("guarded").map(String::as_str), Some("2030-01-01T00:00:00.000Z"));
    let batch = claim(&mut rows, "host", t0(), LEASE, 10, &unlimited, &guard_of(1)).unwrap();
    assert_eq!(batch.claims.len(), 3);
    assert!(batch.held.is_empty());
}

#[test]
fn a_discard_ends_held_deliveries_discarded_and_a_replay_brings_one_back() {
    let mut rows = Rows::default();
    let first = rows.add("guarded", REMOVE);
    let second = rows.add("guarded", REMOVE);
    let batch = claim(&mut rows, "host", t0(), LEASE, 10, &unlimited, &guard_of(1)).unwrap();
    assert_eq!(batch.claims[0].delivery_id, first);
    assert_eq!(rows.discard_held("guarded", "now").unwrap(), 1);
    assert_eq!(rows.status(&second), Status::Discarded);
    assert_eq!(replay(&mut rows, &second).unwrap(), ReplayOutcome::Accepted);
    let batch = claim(&mut rows, "host", t0(), LEASE, 10, &unlimited, &guard_of(1)).unwrap();
    assert_eq!(batch.claims[0].delivery_id, second, "a replay runs whatever the count");
    assert!(batch.claims[0].replay);
}

#[test]
fn an_unreadable_stored_event_ends_dead_without_running() {
    let mut rows = Rows::default();
    let broken = rows.add("a", ADD);
    rows.get(&broken).unwrap().raw = "{not json".into();
    let fine = rows.add("a", ADD);
    assert_eq!(claim_ids(&mut rows, 10, &unlimited), [fine]);
    assert_eq!(rows.status(&broken), Status::Dead);
    assert!(rows.get(&broken).unwrap().last_error.as_deref().unwrap().starts_with("the stored event cannot be read"));
}

fn attempt(result: AttemptResult) -> Attempt {
    Attempt {
        plugin: "a".into(),
        plugin_version: "1.0.0".into(),
        plugin_sha256: "ab".repeat(32),
        started_at: SystemTime::now(),
        duration: Duration::from_millis(5),
        result,
        log: Vec::new(),
        log_dropped: 0,
        http_requests: 0,
    }
}

#[test]
fn complete_lands_where_next_says_and_only_for_the_current_lease() {
    let mut rows = Rows::default();
    let id = rows.add("a", ADD);
    let c = claim(&mut rows, "host", t0(), LEASE, 1, &unlimited, &|_| None).unwrap().claims.remove(0);

    let failed = attempt(AttemptResult::Permanent("no such user".into()));
    assert!(!complete(&mut rows, &id, "stale-token", Some(&failed), &Next::Dead).unwrap(), "not our lease");
    assert_eq!(rows.status(&id), Status::Running);

    let at = t0() + TimeDelta::seconds(60);
    let retried = attempt(AttemptResult::Retryable { message: "busy".into(), retry_after: None });
    assert!(complete(&mut rows, &id, &c.lease_token, Some(&retried), &Next::Retry { at }).unwrap());
    let d = rows.get(&id).unwrap().clone();
    assert_eq!((d.status, d.attempts), (Status::Retrying, 1));
    assert_eq!(d.next_attempt_at.as_deref(), Some("2030-01-01T00:01:00.000Z"));
    assert!(d.last_error.is_some());
    assert!(!complete(&mut rows, &id, &c.lease_token, None, &Next::Done).unwrap(), "no longer running");

    let c = claim(&mut rows, "host", at, LEASE, 1, &unlimited, &|_| None).unwrap().claims.remove(0);
    assert_eq!(c.attempts, 1);
    let by_event = "later".to_owned();
    assert!(complete(&mut rows, &id, &c.lease_token, None, &Next::Superseded { by_event }).unwrap());
    let d = rows.get(&id).unwrap().clone();
    assert_eq!((d.status, d.attempts, d.last_error), (Status::Done, 1, None), "supersede runs nothing");
    let history: Vec<(i64, &str)> = rows.history.iter().map(|h| (h.1, h.2.as_str())).collect();
    assert_eq!(history, [(1, "retryable"), (2, "superseded")]);
    assert_eq!(rows.history[1].3.as_deref(), Some("superseded by event later"));
}

#[test]
fn replay_accepts_finished_held_and_discarded_deliveries_only() {
    let mut rows = Rows::default();
    for status in Status::ALL {
        let id = rows.add("a", ADD);
        rows.get(&id).unwrap().status = status;
        let outcome = replay(&mut rows, &id).unwrap();
        if replayable(status) {
            assert_eq!(outcome, ReplayOutcome::Accepted, "{status:?}");
            let d = rows.get(&id).unwrap();
            assert!(d.status == Status::Pending && d.replay && d.exempt);
        } else {
            assert_eq!(outcome, ReplayOutcome::Conflict(status));
        }
    }
    assert_eq!(replay(&mut rows, "missing").unwrap(), ReplayOutcome::NotFound);
    let replayable_ones: Vec<Status> = Status::ALL.into_iter().filter(|s| replayable(*s)).collect();
    assert_eq!(replayable_ones, [Status::Held, Status::Done, Status::Dead, Status::Discarded]);
}

#[test]
fn supersede_names_the_latest_later_event_about_a_shared_group_or_the_users_lifecycle() {
    let mut rows = Rows::default();
    let about = |groups: &[&str]| {
        let targets: Vec<serde_json::Value> = std::iter::once(json!({"id": "u1", "type": "User"}))
            .chain(groups.iter().map(|g| json!({"id": g, "type": "UserGroup"})))
            .collect();
        let raw = json!({"uuid": "e", "eventType": ADD, "published": "2030-01-01T00:00:00Z", "target": targets});
        Event::from_value(&raw).unwrap()
    };
    assert_eq!(newer_done(&mut rows, "a", &about(&["g1"])).unwrap().as_deref(), Some("same-group"));
    assert_eq!(newer_done(&mut rows, "a", &about(&["g9"])).unwrap().as_deref(), Some("deactivated"));
    let no_subject = Event::from_value(&json!({"uuid": "e", "eventType": ADD, "published": "2030-01-01T00:00:00Z"}));
    assert_eq!(newer_done(&mut rows, "a", &no_subject.unwrap()).unwrap(), None);
}

#[test]
fn the_claim_order_query_names_its_statuses_and_the_drivers_placeholders() {
    let sql = heads_sql(|n| format!("${n}"));
    assert!(sql.contains("d.status IN ('pending', 'retrying') AND d.plugin = $1"), "{sql}");
    assert!(sql.contains("o.status IN ('pending', 'retrying', 'held')"), "{sql}");
    assert!(sql.trim_end().ends_with("LIMIT $3"), "{sql}");
    assert!(heads_sql(|n| format!("?{n}")).contains("d.next_attempt_at <= ?2"));
}
