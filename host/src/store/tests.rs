use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::attempt::{Attempt, AttemptResult};
use crate::okta::Event;
use crate::store::{
    ClaimBatch, EventFilter, EventSummary, EventUser, GuardRule, IngestReport, LogCursor, NewEvent, Next,
    ReplayOutcome, Source, Status, Store,
};

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("hookhost-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("hookhost.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// One backend's empty database for one test; `open` connects to it (again: same data).
pub(crate) trait Backend: Sync {
    fn open(&self) -> Box<dyn Store>;
}

struct Sqlite(TempDir);

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.0 .0.join("hookhost.db")).unwrap())
    }
}

struct Postgres(crate::store::postgres::testing::TestDatabase);

impl Backend for Postgres {
    fn open(&self) -> Box<dyn Store> {
        Box::new(PostgresStore::open_url(&self.0.url).unwrap())
    }
}

/// The same server over TLS, authenticated: `sslmode=verify-full` to `localhost`, the name
/// in its certificate, against the test CA.
struct PostgresVerifyFull(crate::store::postgres::testing::TestDatabase);

impl Backend for PostgresVerifyFull {
    fn open(&self) -> Box<dyn Store> {
        let ca = crate::store::postgres::testing::tls_dir().join("ca.pem");
        Box::new(PostgresStore::open(&self.0.tls_url("localhost", "verify-full"), None, Some(&ca)).unwrap())
    }
}

/// Every test of the suite, once per backend: `store::tests::sqlite::NAME`,
/// `store::tests::postgres::NAME` and `store::tests::postgres_tls::NAME` (which need the
/// PostgreSQL test server).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::Sqlite(super::TempDir::new(stringify!($name))));
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let db = crate::store::postgres::testing::TestDatabase::create(stringify!($name))
                    .unwrap_or_else(|e| panic!("{e}"));
                super::$name(&super::Postgres(db));
            })*
        }
        mod postgres_tls {
            $(#[test]
            fn $name() {
                let db = crate::store::postgres::testing::TestDatabase::create(stringify!($name))
                    .unwrap_or_else(|e| panic!("{e}"));
                super::$name(&super::PostgresVerifyFull(db));
            })*
        }
    };
}

on_both_backends!(
    kv_is_namespaced_per_plugin_and_survives_reopen,
    an_event_is_stored_once_by_uuid_even_in_a_new_delivery,
    a_users_events_are_claimed_in_published_order_one_at_a_time,
    equal_published_times_go_in_ingest_order,
    an_earlier_event_arriving_while_a_later_one_runs_waits_for_it,
    different_users_and_userless_events_run_in_parallel_within_max_running,
    an_expired_lease_returns_to_pending_and_the_stale_claim_cannot_complete,
    a_host_releases_its_own_claims_and_a_single_claim_can_be_released,
    complete_records_history_and_supersede_names_the_later_event,
    newer_done_finds_a_later_event_about_the_same_group_or_a_lifecycle_event,
    replay_puts_done_or_dead_back_and_refuses_unfinished,
    deliveries_page_by_opaque_id_in_ingest_order,
    concurrent_ingests_from_eight_threads_are_all_committed,
    state_survives_reopen,
    two_hosts_claiming_at_once_never_share_a_delivery_or_break_a_users_order,
    hosts_opening_one_new_database_at_once_migrate_it_once,
    search_events_filters_by_user_type_group_and_status_newest_first,
    search_events_pages_by_cursor_without_gaps_or_repeats,
    queue_stats_count_per_plugin_and_chart_the_last_hour,
    kv_writes_from_many_hosts_at_once_all_succeed,
    a_log_page_and_its_cursor_commit_together_and_dedupe_against_hooks,
    the_poller_lease_is_one_holders_until_it_expires,
    a_holder_that_lost_the_lease_stores_nothing,
    search_events_filters_by_source,
    the_guard_holds_past_max_per_window_until_an_operator_releases,
    held_and_discarded_survive_reopen_and_a_replayed_held_delivery_runs,
);

fn event(uuid: &str, event_type: &str, published: &str, user: Option<&str>, group: Option<&str>) -> Event {
    let mut target = Vec::new();
    if let Some(u) = user {
        target.push(json!({"id": u, "type": "User", "alternateId": format!("{u}@example.com")}));
    }
    if let Some(g) = group {
        target.push(json!({"id": g, "type": "UserGroup", "displayName": format!("name of {g}")}));
    }
    Event::from_value(&json!({
        "uuid": uuid, "eventType": event_type, "published": published, "target": target,
    }))
    .unwrap()
}

fn add(uuid: &str, published: &str, user: &str, group: &str) -> Event {
    event(uuid, "group.user_membership.add", published, Some(user), Some(group))
}

fn new(event: Event, plugins: &[&str]) -> NewEvent {
    NewEvent { event, plugins: plugins.iter().map(|p| p.to_string()).collect() }
}

fn attempt(result: AttemptResult) -> Attempt {
    Attempt {
        plugin: "p".into(),
        plugin_version: "1.2.3".into(),
        plugin_sha256: "ab".repeat(32),
        started_at: SystemTime::now(),
        duration: Duration::from_millis(7),
        result,
        log: Vec::new(),
        log_dropped: 0,
        http_requests: 0,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

const LEASE: Duration = Duration::from_secs(30);

fn any(_: &str) -> usize {
    100
}

fn claim_at(s: &dyn Store, host: &str, at: DateTime<Utc>) -> Vec<Claim> {
    s.claim(host, at, LEASE, 10, &any).unwrap()
}

fn uuids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.event.uuid.as_str()).collect()
}

fn status_of(s: &dyn Store, uuid: &str, plugin: &str) -> DeliveryView {
    s.event(uuid).unwrap().unwrap().deliveries.into_iter().find(|d| d.plugin == plugin).unwrap()
}

fn kv_is_namespaced_per_plugin_and_survives_reopen(b: &dyn Backend) {
    {
        let s = b.open();
        s.set("a", "k", "1").unwrap();
        s.set("b", "k", "2").unwrap();
        s.set("a", "k", "3").unwrap();
    }
    let s = b.open();
    assert_eq!(s.get("a", "k").unwrap().as_deref(), Some("3"));
    assert_eq!(s.get("b", "k").unwrap().as_deref(), Some("2"));
    s.delete("a", "k").unwrap();
    assert_eq!(s.get("a", "k").unwrap(), None);
}

fn an_event_is_stored_once_by_uuid_even_in_a_new_delivery(b: &dyn Backend) {
    let s = b.open();
    let e1 = add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1");
    let e2 = add("e2", "2024-05-01T10:00:01.000Z", "u2", "g1");
    let r = s.ingest(Some("okta-1"), &[new(e1.clone(), &["p", "q"]), new(e2, &[])]).unwrap();
    assert_eq!((r.stored, r.duplicates, r.deliveries), (2, 0, 2));

    // Okta's retry of the same event inside a new delivery, and a repeat within one batch.
    let e3 = add("e3", "2024-05-01T10:00:02.000Z", "u3", "g1");
    let r = s.ingest(Some("okta-2"), &[new(e1, &["p", "q", "r"]), new(e3.clone(), &["p"]), new(e3, &["p"])]).unwrap();
    assert_eq!((r.stored, r.duplicates, r.deliveries), (1, 2, 1));

    let v = s.event("e1").unwrap().unwrap();
    assert_eq!(v.okta_delivery_id.as_deref(), Some("okta-1"));
    assert_eq!(v.event_type, "group.user_membership.add");
    assert_eq!(v.published, "2024-05-01T10:00:00.000Z");
    let plugins: Vec<_> = v.deliveries.iter().map(|d| d.plugin.as_str()).collect();
    assert_eq!(plugins, ["p", "q"]);
    assert!(v.deliveries.iter().all(|d| d.status == Status::Pending && d.attempts == 0));
    assert!(v.deliveries.iter().all(|d| d.plugin_version.is_none() && d.next_attempt_at.is_none()));
    // Stored with no delivery when no plugin subscribes.
    assert!(s.event("e2").unwrap().unwrap().deliveries.is_empty());
    assert!(s.event("nope").unwrap().is_none());
    let counts = s.counts().unwrap();
    assert_eq!(counts, vec![("p".into(), Status::Pending, 2), ("q".into(), Status::Pending, 1)]);
    assert!(s.busy().unwrap());
}

fn a_users_events_are_claimed_in_published_order_one_at_a_time(b: &dyn Backend) {
    let s = b.open();
    // Okta delivered the later-published event first.
    s.ingest(None, &[new(add("late", "2024-05-01T10:00:02.000Z", "u1", "g1"), &["p"])]).unwrap();
    // Earlier by instant, though later as text (another offset): compared by instant.
    s.ingest(None, &[new(add("early", "2024-05-01T12:00:01.500+02:00", "u1", "g1"), &["p"])]).unwrap();

    let first = claim_at(&*s, "h", t0());
    assert_eq!(uuids(&first), ["early"]);
    assert_eq!(first[0].event, add("early", "2024-05-01T12:00:01.500+02:00", "u1", "g1"), "rebuilt from raw");
    assert!(!first[0].replay && first[0].attempts == 0);
    assert!(claim_at(&*s, "h", t0()).is_empty(), "the user's next event waits while one runs");

    let c = &first[0];
    let retry = Next::Retry { at: t0() + secs(60) };
    let failed = attempt(AttemptResult::Retryable { message: "graph 503".into(), retry_after: None });
    assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&failed), &retry).unwrap());
    assert!(claim_at(&*s, "h", t0() + secs(30)).is_empty(), "a retrying head holds the user's queue");

    let again = claim_at(&*s, "h", t0() + secs(60));
    assert_eq!(uuids(&again), ["early"]);
    assert_eq!(again[0].attempts, 1);
    let ok = attempt(AttemptResult::Done { summary: "ok".into() });
    assert!(s.complete(&again[0].delivery_id, &again[0].lease_token, Some(&ok), &Next::Done).unwrap());

    let next = claim_at(&*s, "h", t0() + secs(60));
    assert_eq!(uuids(&next), ["late"]);
}

fn equal_published_times_go_in_ingest_order(b: &dyn Backend) {
    let s = b.open();
    for uuid in ["a", "b", "c"] {
        s.ingest(None, &[new(add(uuid, "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"])]).unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let c = claim_at(&*s, "h", t0());
        assert_eq!(c.len(), 1);
        order.push(c[0].event.uuid.clone());
        assert!(s.complete(&c[0].delivery_id, &c[0].lease_token, None, &Next::Done).unwrap());
    }
    assert_eq!(order, ["a", "b", "c"]);
}

fn an_earlier_event_arriving_while_a_later_one_runs_waits_for_it(b: &dyn Backend) {
    let s = b.open();
    s.ingest(None, &[new(add("late", "2024-05-01T10:00:02.000Z", "u1", "g1"), &["p"])]).unwrap();
    let late = claim_at(&*s, "h", t0());
    assert_eq!(uuids(&late), ["late"]);
    s.ingest(None, &[new(add("early", "2024-05-01T10:00:01.000Z", "u1", "g1"), &["p"])]).unwrap();
    assert!(claim_at(&*s, "h", t0()).is_empty());
    let ok = attempt(AttemptResult::Done { summary: "ok".into() });
    assert!(s.complete(&late[0].delivery_id, &late[0].lease_token, Some(&ok), &Next::Done).unwrap());
    let early = claim_at(&*s, "h", t0());
    assert_eq!(uuids(&early), ["early"]);
    assert_eq!(s.newer_done("p", &early[0].event).unwrap().as_deref(), Some("late"));
}

fn different_users_and_userless_events_run_in_parallel_within_max_running(b: &dyn Backend) {
    let s = b.open();
    let p = "2024-05-01T10:00:00.000Z";
    s.ingest(
        None,
        &[
            new(add("u1-a", p, "u1", "g"), &["p"]),
            new(add("u1-b", p, "u1", "g"), &["p"]),
            new(add("u2-a", p, "u2", "g"), &["p"]),
            new(event("sys-1", "system.thing", p, None, None), &["p"]),
            new(event("sys-2", "system.thing", p, None, None), &["p"]),
            new(add("q-u1", p, "u1", "g"), &["q"]),
            new(add("gone-u9", p, "u9", "g"), &["gone"]),
        ],
    )
    .unwrap();
    let cap = |plugin: &str| match plugin {
        "p" => 3,
        "q" => 5,
        _ => 0, // not loaded: never claimed
    };
    let first = s.claim("h", t0(), LEASE, 10, &cap).unwrap();
    assert_eq!(uuids(&first), ["u1-a", "u2-a", "sys-1", "q-u1"]);
    // p has 3 running: nothing more for it; u1-b waits for u1-a anyway.
    assert!(s.claim("h", t0(), LEASE, 10, &cap).unwrap().is_empty());
    let c = &first[2];
    assert!(s.complete(&c.delivery_id, &c.lease_token, None, &Next::Done).unwrap());
    assert_eq!(uuids(&s.claim("h", t0(), LEASE, 10, &cap).unwrap()), ["sys-2"]);
    // `limit` caps one call.
    for i in 0..5 {
        s.ingest(None, &[new(add(&format!("e{i}"), p, &format!("user{i}"), "g"), &["lim"])]).unwrap();
    }
    let only_lim = |plugin: &str| if plugin == "lim" { 100 } else { 0 };
    assert_eq!(s.claim("h", t0(), LEASE, 2, &only_lim).unwrap().len(), 2);
    assert_eq!(status_of(&*s, "gone-u9", "gone").status, Status::Pending);
}

fn an_expired_lease_returns_to_pending_and_the_stale_claim_cannot_complete(b: &dyn Backend) {
    let s = b.open();
    s.ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"])]).unwrap();
    let c = claim_at(&*s, "crashed", t0()).remove(0);
    let failed = attempt(AttemptResult::TimedOut);
    assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&failed), &Next::Retry { at: t0() }).unwrap());
    let stale = claim_at(&*s, "crashed", t0()).remove(0);
    assert!(s.renew(&stale.delivery_id, &stale.lease_token, t0() + secs(60)).unwrap());

    assert_eq!(s.release_claims(t0() + secs(59), None).unwrap(), 0, "lease still live");
    assert_eq!(s.release_claims(t0() + secs(61), None).unwrap(), 1);
    let d = status_of(&*s, "e1", "p");
    assert_eq!((d.status, d.attempts), (Status::Pending, 1));

    let fresh = claim_at(&*s, "other", t0() + secs(61)).remove(0);
    let ok = attempt(AttemptResult::Done { summary: "ok".into() });
    assert!(!s.complete(&stale.delivery_id, &stale.lease_token, Some(&ok), &Next::Done).unwrap());
    assert!(!s.renew(&stale.delivery_id, &stale.lease_token, t0() + secs(600)).unwrap());
    assert!(!s.release(&stale.delivery_id, &stale.lease_token).unwrap());
    assert_eq!(status_of(&*s, "e1", "p").status, Status::Running);
    assert!(s.complete(&fresh.delivery_id, &fresh.lease_token, Some(&ok), &Next::Done).unwrap());
    let d = status_of(&*s, "e1", "p");
    assert_eq!((d.status, d.attempts, d.last_error), (Status::Done, 2, None));
    assert!(!s.busy().unwrap());
}

fn a_host_releases_its_own_claims_and_a_single_claim_can_be_released(b: &dyn Backend) {
    let s = b.open();
    let p = "2024-05-01T10:00:00.000Z";
    s.ingest(None, &[new(add("a", p, "u1", "g"), &["p"]), new(add("b", p, "u2", "g"), &["p"])]).unwrap();
    let mine = s.claim("me", t0(), LEASE, 1, &any).unwrap().remove(0);
    let theirs = s.claim("them", t0(), LEASE, 1, &any).unwrap().remove(0);
    assert_eq!(s.release_claims(t0(), Some("me")).unwrap(), 1);
    assert_eq!(status_of(&*s, &mine.event.uuid, "p").status, Status::Pending);
    assert_eq!(status_of(&*s, &theirs.event.uuid, "p").status, Status::Running);
    assert!(s.release(&theirs.delivery_id, &theirs.lease_token).unwrap());
    let d = status_of(&*s, &theirs.event.uuid, "p");
    assert_eq!((d.status, d.attempts), (Status::Pending, 0));
    assert!(s.attempts(&theirs.delivery_id).unwrap().is_empty());
}

fn complete_records_history_and_supersede_names_the_later_event(b: &dyn Backend) {
    let s = b.open();
    s.ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"])]).unwrap();
    let c = claim_at(&*s, "h", t0()).remove(0);
    let mut failed =
        attempt(AttemptResult::Retryable { message: "graph 429".into(), retry_after: Some(Duration::from_secs(5)) });
    failed.log_dropped = 3;
    assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&failed), &Next::Retry { at: t0() + secs(5) }).unwrap());
    let d = status_of(&*s, "e1", "p");
    assert_eq!(d.status, Status::Retrying);
    assert_eq!(d.next_attempt_at.as_deref(), Some("2030-01-01T00:00:05.000Z"));
    assert_eq!(d.last_error.as_deref(), Some("retryable: graph 429 (retry after 5000 ms)"));
    assert_eq!(d.plugin_version.as_deref(), Some("1.2.3"));

    let c = claim_at(&*s, "h", t0() + secs(5)).remove(0);
    assert!(s.complete(&c.delivery_id, &c.lease_token, None, &Next::Superseded { by_event: "e9".into() }).unwrap());
    let d = status_of(&*s, "e1", "p");
    assert_eq!((d.status, d.attempts, d.last_error.as_deref()), (Status::Done, 1, None));
    let history = s.attempts(&c.delivery_id).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].number, history[0].result.as_str()), (1, "retryable"));
    assert_eq!(history[0].duration_ms, 7);
    assert_eq!(history[0].log[0]["source"], "host");
    assert_eq!((history[1].number, history[1].result.as_str()), (2, "superseded"));
    assert_eq!(history[1].error.as_deref(), Some("superseded by event e9"));

    // A dead end keeps the error.
    s.ingest(None, &[new(add("e2", "2024-05-01T10:00:00.000Z", "u2", "g1"), &["p"])]).unwrap();
    let c = claim_at(&*s, "h", t0()).remove(0);
    let trapped = attempt(AttemptResult::Trapped("unreachable".into()));
    assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&trapped), &Next::Dead).unwrap());
    let d = status_of(&*s, "e2", "p");
    assert_eq!((d.status, d.last_error.as_deref()), (Status::Dead, Some("trapped: unreachable")));
    // Completing twice is refused: the claim is over.
    assert!(!s.complete(&c.delivery_id, &c.lease_token, None, &Next::Done).unwrap());
}

fn newer_done_finds_a_later_event_about_the_same_group_or_a_lifecycle_event(b: &dyn Backend) {
    let s = b.open();
    let run_to_done = |e: Event, plugin: &str| {
        s.ingest(None, &[new(e.clone(), &[plugin])]).unwrap();
        let c = s.claim("h", t0(), LEASE, 100, &any).unwrap();
        let c = c.iter().find(|c| c.event.uuid == e.uuid).unwrap();
        let ok = attempt(AttemptResult::Done { summary: "ok".into() });
        assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&ok), &Next::Done).unwrap());
    };
    run_to_done(add("later-g1", "2024-05-01T10:00:05.000Z", "u1", "g1"), "p");
    run_to_done(add("earlier-g3", "2024-05-01T09:00:00.000Z", "u1", "g3"), "p");

    let stale = add("stale", "2024-05-01T10:00:01.000Z", "u1", "g1");
    assert_eq!(s.newer_done("p", &stale).unwrap().as_deref(), Some("later-g1"));
    assert_eq!(s.newer_done("q", &stale).unwrap(), None, "another plugin's history");
    let other_user = add("x", "2024-05-01T10:00:01.000Z", "u2", "g1");
    assert_eq!(s.newer_done("p", &other_user).unwrap(), None);
    let other_group = add("y", "2024-05-01T10:00:01.000Z", "u1", "g2");
    assert_eq!(s.newer_done("p", &other_group).unwrap(), None);
    let after = add("z", "2024-05-01T11:00:00.000Z", "u1", "g1");
    assert_eq!(s.newer_done("p", &after).unwrap(), None, "nothing later ran");

    run_to_done(event("deact", "user.lifecycle.deactivate", "2024-05-01T12:00:00.000Z", Some("u1"), None), "p");
    assert_eq!(s.newer_done("p", &other_group).unwrap().as_deref(), Some("deact"));
    assert_eq!(s.newer_done("p", &stale).unwrap().as_deref(), Some("deact"), "the latest is named");

    // A later delivery that was itself superseded did not run: it does not count.
    s.ingest(None, &[new(add("skipped", "2024-05-01T13:00:00.000Z", "u5", "g7"), &["p"])]).unwrap();
    let c = claim_at(&*s, "h", t0()).remove(0);
    assert!(s.complete(&c.delivery_id, &c.lease_token, None, &Next::Superseded { by_event: "w".into() }).unwrap());
    let older = add("older", "2024-05-01T10:00:00.000Z", "u5", "g7");
    assert_eq!(s.newer_done("p", &older).unwrap(), None);
}

fn replay_puts_done_or_dead_back_and_refuses_unfinished(b: &dyn Backend) {
    let s = b.open();
    let p = "2024-05-01T10:00:00.000Z";
    s.ingest(None, &[new(add("a", p, "u1", "g"), &["p"]), new(add("b", p, "u2", "g"), &["p"])]).unwrap();
    assert_eq!(s.replay("d_nope").unwrap(), ReplayOutcome::NotFound);
    let a = status_of(&*s, "a", "p").id;
    assert_eq!(s.replay(&a).unwrap(), ReplayOutcome::Conflict(Status::Pending));

    let claims = claim_at(&*s, "h", t0());
    let (ca, cb) = (&claims[0], &claims[1]);
    assert_eq!(s.replay(&ca.delivery_id).unwrap(), ReplayOutcome::Conflict(Status::Running));
    let dead = attempt(AttemptResult::Permanent("no such user".into()));
    assert!(s.complete(&ca.delivery_id, &ca.lease_token, Some(&dead), &Next::Dead).unwrap());
    let busy = attempt(AttemptResult::TimedOut);
    assert!(s.complete(&cb.delivery_id, &cb.lease_token, Some(&busy), &Next::Retry { at: t0() + secs(9) }).unwrap());
    assert_eq!(s.replay(&cb.delivery_id).unwrap(), ReplayOutcome::Conflict(Status::Retrying));

    assert_eq!(s.replay(&ca.delivery_id).unwrap(), ReplayOutcome::Accepted);
    let d = status_of(&*s, "a", "p");
    assert_eq!((d.status, d.attempts, d.next_attempt_at), (Status::Pending, 1, None));
    let again = claim_at(&*s, "h", t0());
    assert_eq!(uuids(&again), ["a"]);
    assert!(again[0].replay && again[0].attempts == 1);
    let ok = attempt(AttemptResult::Done { summary: "ok".into() });
    assert!(s.complete(&again[0].delivery_id, &again[0].lease_token, Some(&ok), &Next::Done).unwrap());
    assert_eq!(s.replay(&ca.delivery_id).unwrap(), ReplayOutcome::Accepted, "done can be replayed too");
    assert!(claim_at(&*s, "h", t0())[0].replay);
}

fn deliveries_page_by_opaque_id_in_ingest_order(b: &dyn Backend) {
    let s = b.open();
    for i in 0..5 {
        let e = add(&format!("e{i}"), "2024-05-01T10:00:00.000Z", &format!("u{i}"), "g");
        s.ingest(None, &[new(e, &["p"])]).unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = s.deliveries(None, 2, after.as_deref()).unwrap();
        pages += 1;
        seen.extend(page.iter().map(|d| d.event_id.clone()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(pages, 3);
    let (all, next) = s.deliveries(None, 5, None).unwrap();
    assert_eq!((all.len(), next), (5, None), "no next when nothing remains");

    let c = claim_at(&*s, "h", t0());
    for c in c.iter().filter(|c| c.event.uuid != "e2") {
        assert!(s.complete(&c.delivery_id, &c.lease_token, None, &Next::Dead).unwrap());
    }
    let (dead, next) = s.deliveries(Some(Status::Dead), 3, None).unwrap();
    assert_eq!(dead.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e0", "e1", "e3"]);
    let (rest, none) = s.deliveries(Some(Status::Dead), 3, next.as_deref()).unwrap();
    assert_eq!((rest.len(), none), (1, None));
    assert_eq!(rest[0].event_id, "e4");
}

fn concurrent_ingests_from_eight_threads_are_all_committed(b: &dyn Backend) {
    let s = Arc::<dyn Store>::from(b.open());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut total = IngestReport::default();
                for i in 0..25 {
                    let mut batch: Vec<NewEvent> = (0..4)
                        .map(|k| new(add(&format!("t{t}-{i}-{k}"), "2024-05-01T10:00:00.000Z", "u", "g"), &["p"]))
                        .collect();
                    // The same event from every thread: stored once.
                    batch.push(new(add("shared", "2024-05-01T10:00:00.000Z", "u", "g"), &["p"]));
                    let r = s.ingest(Some("okta"), &batch).unwrap();
                    total.stored += r.stored;
                    total.duplicates += r.duplicates;
                    total.deliveries += r.deliveries;
                }
                total
            })
        })
        .collect();
    let mut stored = 0;
    let mut duplicates = 0;
    for t in threads {
        let r = t.join().unwrap();
        stored += r.stored;
        duplicates += r.duplicates;
    }
    assert_eq!(stored, 8 * 25 * 4 + 1);
    assert_eq!(duplicates, 8 * 25 - 1);
    drop(s);
    let s = b.open();
    let counts = s.counts().unwrap();
    assert_eq!(counts, vec![("p".into(), Status::Pending, 801)]);
    let mut ids = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let (page, next) = s.deliveries(None, 1000, after.as_deref()).unwrap();
        ids.extend(page.into_iter().map(|d| d.id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(ids.len(), 801, "every delivery has its own id");
}

fn state_survives_reopen(b: &dyn Backend) {
    let id;
    {
        let s = b.open();
        s.ingest(Some("okta-1"), &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g"), &["p"])]).unwrap();
        let c = claim_at(&*s, "host-a", t0()).remove(0);
        id = c.delivery_id;
    }
    let s = b.open();
    let d = status_of(&*s, "e1", "p");
    assert_eq!((d.id.as_str(), d.status), (id.as_str(), Status::Running));
    // What `serve` does at start with the SQLite store: take back its own stale claims.
    assert_eq!(s.release_claims(t0(), Some("host-a")).unwrap(), 1);
    assert_eq!(uuids(&claim_at(&*s, "host-a", t0())), ["e1"]);
    let r = s.ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g"), &["p"])]).unwrap();
    assert_eq!(r.duplicates, 1);
}

/// What the PostgreSQL claim must guarantee when hosts race (SQLite gives it by locking):
/// two stores on one database (two hosts) claim and complete as fast as they can; every
/// delivery runs exactly once, never two of one user's at a time, and each user's in
/// published order, although Okta delivered them newest first.
fn two_hosts_claiming_at_once_never_share_a_delivery_or_break_a_users_order(b: &dyn Backend) {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    const USERS: usize = 30;
    const PER_USER: usize = 5;
    let s = b.open();
    for k in (0..PER_USER).rev() {
        let batch: Vec<NewEvent> = (0..USERS)
            .map(|u| {
                let published = format!("2024-05-01T10:00:0{k}.000Z");
                new(add(&format!("u{u}-{k}"), &published, &format!("user{u}"), "g"), &["p"])
            })
            .collect();
        s.ingest(Some("okta"), &batch).unwrap();
    }
    let running: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let order: Mutex<HashMap<String, Vec<String>>> = Mutex::new(HashMap::new());
    let ran: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for host in ["host-a", "host-b"] {
            let store = b.open();
            let (running, order, ran) = (&running, &order, &ran);
            scope.spawn(move || loop {
                let claims = store.claim(host, Utc::now(), LEASE, 4, &any).unwrap();
                if claims.is_empty() {
                    if !store.busy().unwrap() {
                        break;
                    }
                    std::thread::yield_now();
                    continue;
                }
                for c in &claims {
                    let user = c.event.subject().unwrap().to_string();
                    assert!(running.lock().unwrap().insert(user.clone()), "{user} claimed twice at once");
                    order.lock().unwrap().entry(user).or_default().push(c.event.published.clone());
                    ran.lock().unwrap().push(c.delivery_id.clone());
                }
                for c in claims {
                    running.lock().unwrap().remove(c.event.subject().unwrap());
                    assert!(store.complete(&c.delivery_id, &c.lease_token, None, &Next::Done).unwrap());
                }
            });
        }
    });
    let ran = ran.into_inner().unwrap();
    let distinct: HashSet<_> = ran.iter().collect();
    assert_eq!((ran.len(), distinct.len()), (USERS * PER_USER, USERS * PER_USER), "each delivery ran once");
    for (user, seen) in order.into_inner().unwrap() {
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "{user}'s events ran out of published order");
    }
}

/// Four hosts start on one new database at the same moment: each migration is applied
/// once (a second application would fail on the existing tables) and all of them work.
fn hosts_opening_one_new_database_at_once_migrate_it_once(b: &dyn Backend) {
    let barrier = std::sync::Barrier::new(4);
    let stores: Vec<Box<dyn Store>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    b.open()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let r = stores[0].ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g"), &["p"])]).unwrap();
    assert_eq!(r.stored, 1);
    for s in &stores[1..] {
        assert_eq!(
            s.ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g"), &["p"])]).unwrap().duplicates,
            1
        );
    }
}

// ---------------------------------------------------------------------------------------
// The operator console's reads.

/// A membership event with a named user and group, as the console lists it.
fn named(uuid: &str, event_type: &str, user: (&str, &str, &str), group: (&str, &str)) -> Event {
    Event::from_value(&json!({
        "uuid": uuid, "eventType": event_type, "published": "2024-05-01T10:00:00Z",
        "target": [
            {"id": user.0, "type": "User", "alternateId": user.1, "displayName": user.2},
            {"id": group.0, "type": "UserGroup", "displayName": group.1},
        ],
    }))
    .unwrap()
}

fn search(s: &dyn Store, f: EventFilter) -> Vec<String> {
    s.search_events(&EventFilter { limit: 50, ..f }).unwrap().events.into_iter().map(|e| e.id).collect()
}

fn text(t: &str) -> Option<String> {
    Some(t.to_string())
}

fn search_events_filters_by_user_type_group_and_status_newest_first(b: &dyn Backend) {
    let s = b.open();
    let add = "group.user_membership.add";
    // Uuids grow with ingest order, so ties in `received_at` (same millisecond) order the same.
    s.ingest(
        None,
        &[new(named("e1", add, ("00u1", "jane.doe@example.com", "Jane Doe"), ("00gA", "O365Guest")), &["p"])],
    )
    .unwrap();
    s.ingest(
        None,
        &[new(
            named(
                "e2",
                "group.user_membership.remove",
                ("00u2", "bob@example.com", "Bob 100%_Sure"),
                ("00gB", "Engineering"),
            ),
            &["p", "q"],
        )],
    )
    .unwrap();
    s.ingest(
        None,
        &[new(named("e3", add, ("00u1", "jane.doe@example.com", "Jane Doe"), ("00gB", "Engineering")), &[])],
    )
    .unwrap();
    s.ingest(None, &[new(event("e4", "user.lifecycle.deactivate", "2024-05-01T10:00:00Z", None, None), &["p"])])
        .unwrap();

    assert_eq!(search(&*s, EventFilter::default()), ["e4", "e3", "e2", "e1"]);
    // The login, the display name and the Okta id, case-insensitively; blank is no filter.
    assert_eq!(search(&*s, EventFilter { text: text("JANE.DOE@"), ..Default::default() }), ["e3", "e1"]);
    assert_eq!(search(&*s, EventFilter { text: text("bob 100"), ..Default::default() }), ["e2"]);
    assert_eq!(search(&*s, EventFilter { text: text("00U2"), ..Default::default() }), ["e2"]);
    assert_eq!(search(&*s, EventFilter { text: text("  "), ..Default::default() }).len(), 4);
    // LIKE wildcards in the text are literal.
    assert_eq!(search(&*s, EventFilter { text: text("100%_s"), ..Default::default() }), ["e2"]);
    assert!(search(&*s, EventFilter { text: text("j_ne"), ..Default::default() }).is_empty());
    assert_eq!(search(&*s, EventFilter { text: text("%"), ..Default::default() }), ["e2"]);
    // Event type and group: substrings; a group by display name or id.
    assert_eq!(search(&*s, EventFilter { event_type: text("membership"), ..Default::default() }), ["e3", "e2", "e1"]);
    assert_eq!(search(&*s, EventFilter { event_type: text("REMOVE"), ..Default::default() }), ["e2"]);
    assert_eq!(search(&*s, EventFilter { group: text("engineer"), ..Default::default() }), ["e3", "e2"]);
    assert_eq!(search(&*s, EventFilter { group: text("00ga"), ..Default::default() }), ["e1"]);
    // Status: any delivery in it; filters combine with AND.
    let c = claim_at(&*s, "h", t0());
    let e2p = c.iter().find(|c| c.event.uuid == "e2" && c.plugin == "p").unwrap();
    assert!(s
        .complete(
            &e2p.delivery_id,
            &e2p.lease_token,
            Some(&attempt(AttemptResult::Permanent("no".into()))),
            &Next::Dead
        )
        .unwrap());
    assert_eq!(search(&*s, EventFilter { status: Some(Status::Dead), ..Default::default() }), ["e2"]);
    assert!(
        search(&*s, EventFilter { status: Some(Status::Dead), text: text("jane"), ..Default::default() }).is_empty()
    );

    let page = s.search_events(&EventFilter { text: text("bob"), limit: 10, ..Default::default() }).unwrap();
    let e2 = &page.events[0];
    assert_eq!(e2.event_type, "group.user_membership.remove");
    assert_eq!(e2.published, "2024-05-01T10:00:00.000Z");
    assert_eq!(
        e2.user,
        Some(EventUser { id: "00u2".into(), login: text("bob@example.com"), display_name: text("Bob 100%_Sure") })
    );
    assert_eq!(e2.groups, ["Engineering"]);
    let statuses: Vec<(&str, u64)> = e2.statuses.iter().map(|(k, v)| (*k, *v)).collect();
    assert!(statuses.contains(&("dead", 1)) && statuses.len() == 2, "{statuses:?}");
    let e4 = &search_one(&*s, "e4");
    assert_eq!((e4.user.as_ref(), e4.groups.len()), (None, 0));
    assert!(search_one(&*s, "e3").statuses.is_empty(), "no plugin subscribed");
}

fn search_one(s: &dyn Store, uuid: &str) -> EventSummary {
    s.search_events(&EventFilter { text: text(uuid), limit: 1, ..Default::default() }).unwrap().events.remove(0)
}

fn search_events_pages_by_cursor_without_gaps_or_repeats(b: &dyn Backend) {
    let s = b.open();
    // One batch: every event has the same `received_at`, so the uuid breaks the tie.
    let events: Vec<NewEvent> =
        (0..7).map(|i| new(add(&format!("e{i}"), "2024-05-01T10:00:00Z", "u", "g"), &["p"])).collect();
    s.ingest(None, &events).unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.search_events(&EventFilter { limit: 3, before: before.clone(), ..Default::default() }).unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.into_iter().map(|e| e.id));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]);
    // The limit is clamped.
    assert_eq!(s.search_events(&EventFilter::default()).unwrap().events.len(), 1);
}

#[test]
fn migration_3_backfills_the_search_columns_of_existing_events() {
    let dir = TempDir::new("migration3");
    {
        // A database as version 2 left it, with one event.
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);")
            .unwrap();
        for (version, sql) in crate::store::sqlite::schema::MIGRATIONS.iter().filter(|(v, _)| *v <= 2) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 'then')", [version]).unwrap();
        }
        let e = named(
            "old",
            "group.user_membership.add",
            ("00u7", "old.timer@example.com", "Old Timer"),
            ("00gX", "O365Guest"),
        );
        let mut raw: serde_json::Value = serde_json::from_str(&e.raw).unwrap();
        // A second group target and a repeat of the first: kept in order, once each.
        raw["target"].as_array_mut().unwrap().push(json!({"id": "00gY", "type": "UserGroup", "displayName": "Second"}));
        raw["target"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "00gX", "type": "UserGroup", "displayName": "O365Guest"}));
        conn.execute(
            "INSERT INTO events (uuid, event_type, published, published_key, received_at, subject, group_ids, raw)
             VALUES ('old', ?1, ?2, ?2, '2024-05-01T10:00:00.000Z', '00u7', '[\"00gX\",\"00gY\"]', ?3)",
            rusqlite::params![e.event_type, e.published, raw.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (uuid, event_type, published, published_key, received_at, subject, group_ids, raw)
             VALUES ('bare', 't', ?1, ?1, '2024-05-01T10:00:00.000Z', NULL, '[]', '{\"uuid\":\"bare\"}')",
            [&e.published],
        )
        .unwrap();
    }
    let s: Box<dyn Store> = Box::new(SqliteStore::open(&dir.db()).unwrap());
    let old = search_one(&*s, "old.timer");
    assert_eq!(old.id, "old");
    assert_eq!(old.user.unwrap().display_name.as_deref(), Some("Old Timer"));
    assert_eq!(old.groups, ["O365Guest", "Second"]);
    assert_eq!(search(&*s, EventFilter { group: text("second"), ..Default::default() }), ["old"]);
    assert_eq!(search(&*s, EventFilter::default()), ["old", "bare"]);
}

fn queue_stats_count_per_plugin_and_chart_the_last_hour(b: &dyn Backend) {
    let s = b.open();
    for (i, plugins) in [&["p", "q"][..], &["p"], &["p"]].iter().enumerate() {
        s.ingest(None, &[new(add(&format!("e{i}"), "2024-05-01T10:00:00Z", &format!("u{i}"), "g"), plugins)]).unwrap();
    }
    let now = Utc::now();
    let claims = claim_at(&*s, "h", t0());
    let on = |uuid: &str, plugin: &str, minutes_ago: i64, result: AttemptResult, next: Next| {
        let c = claims.iter().find(|c| c.event.uuid == uuid && c.plugin == plugin).unwrap();
        let mut a = attempt(result);
        a.started_at = (now - TimeDelta::minutes(minutes_ago)).into();
        assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&a), &next).unwrap());
    };
    on("e0", "p", 0, AttemptResult::Done { summary: "ok".into() }, Next::Done);
    on("e1", "p", 0, AttemptResult::Permanent("403".into()), Next::Dead);
    on("e0", "q", 5, AttemptResult::Retryable { message: "503".into(), retry_after: None }, Next::Retry { at: t0() });
    // e2/p goes back to pending, waiting since it was ingested.
    let c = claims.iter().find(|c| c.event.uuid == "e2").unwrap();
    assert!(s.release(&c.delivery_id, &c.lease_token).unwrap());
    let later = now + TimeDelta::seconds(90);
    let stats = s.queue_stats(later).unwrap();

    let p = &stats.plugins[0];
    assert_eq!((p.plugin.as_str(), p.pending, p.running, p.retrying, p.done, p.dead), ("p", 1, 0, 0, 1, 1));
    let q = &stats.plugins[1];
    assert_eq!((q.plugin.as_str(), q.pending, q.retrying, q.dead), ("q", 0, 1, 0));
    let age = p.oldest_pending_age_secs.unwrap();
    assert!((90..=100).contains(&age), "{age}");
    assert!(p.oldest_pending_at.is_some());

    assert_eq!(stats.attempts_per_minute.len(), 60);
    let total: u64 = stats.attempts_per_minute.iter().map(|m| m.attempts).sum();
    let failed: u64 = stats.attempts_per_minute.iter().map(|m| m.failed).sum();
    assert_eq!((total, failed), (3, 2));
    let last = stats.attempts_per_minute.last().unwrap();
    let this_minute = crate::store::common::fmt_time(later)[..16].to_string();
    assert!(last.minute.starts_with(&this_minute) && last.minute.ends_with(":00.000Z"), "{}", last.minute);
}

/// Plugin KV under concurrent writers on separate connections (hosts): the graph-guest
/// token cache and user mapping are written by whichever attempt runs. Every write succeeds,
/// the value read afterwards is one that was written, and other keys are untouched.
fn kv_writes_from_many_hosts_at_once_all_succeed(b: &dyn Backend) {
    let stores: Vec<Box<dyn Store>> = (0..4).map(|_| b.open()).collect();
    stores[0].set("graph-guest", "other", "kept").unwrap();
    std::thread::scope(|scope| {
        for (t, s) in stores.iter().enumerate() {
            scope.spawn(move || {
                for i in 0..50 {
                    s.set("graph-guest", "token", &format!("t{t}-{i}")).unwrap();
                    s.set("graph-guest", &format!("map-{t}"), &i.to_string()).unwrap();
                    assert!(s.get("graph-guest", "token").unwrap().is_some());
                }
            });
        }
    });
    let token = stores[0].get("graph-guest", "token").unwrap().unwrap();
    assert!(token.ends_with("-49"), "the last write of some writer wins: {token}");
    for t in 0..4 {
        assert_eq!(stores[1].get("graph-guest", &format!("map-{t}")).unwrap().as_deref(), Some("49"));
    }
    assert_eq!(stores[2].get("graph-guest", "other").unwrap().as_deref(), Some("kept"));
}

fn log_cursor(next: &str, last: &str) -> LogCursor {
    LogCursor {
        next_url: Some(next.into()),
        filter: Some("eventType eq \"group.user_membership.add\"".into()),
        last_published: Some(last.into()),
    }
}

fn a_log_page_and_its_cursor_commit_together_and_dedupe_against_hooks(b: &dyn Backend) {
    let s = b.open();
    assert_eq!(s.log_lease("h1", t0(), LEASE).unwrap(), Some(LogCursor::default()), "a new store has no cursor");
    // One event came by hook first.
    s.ingest(Some("okta-1"), &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"])]).unwrap();
    let page = [
        new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"]),
        new(add("e2", "2024-05-01T10:00:01.000Z", "u2", "g1"), &["p"]),
    ];
    let c1 = log_cursor("https://okta/api/v1/logs?after=1", "2024-05-01T10:00:01.000000000Z");
    let r = s.ingest_page(Source::SystemLog, &page, Some(("h1", &c1))).unwrap().unwrap();
    assert_eq!((r.stored, r.duplicates, r.deliveries), (1, 1, 1));
    let e1 = s.event("e1").unwrap().unwrap();
    assert_eq!((e1.source.as_str(), e1.deliveries.len()), ("hook", 1), "the first arrival names the source");
    let e2 = s.event("e2").unwrap().unwrap();
    assert_eq!((e2.source.as_str(), e2.okta_delivery_id), ("system_log", None));
    // The same page again (a crash before the cursor moved would replay it): nothing new.
    let r = s.ingest_page(Source::SystemLog, &page, Some(("h1", &c1))).unwrap().unwrap();
    assert_eq!((r.stored, r.duplicates, r.deliveries), (0, 2, 0));
    // The cursor survives a reopen; a bounded pass (no cursor) leaves it alone.
    drop(s);
    let s = b.open();
    s.ingest_page(Source::SystemLog, &[new(add("e3", "2024-05-01T10:00:02.000Z", "u3", "g1"), &[])], None)
        .unwrap()
        .unwrap();
    assert_eq!(s.log_lease("h1", t0(), LEASE).unwrap(), Some(c1));
    // An empty page moves the cursor too.
    let c2 = log_cursor("https://okta/api/v1/logs?after=2", "2024-05-01T10:00:01.000000000Z");
    let r = s.ingest_page(Source::SystemLog, &[], Some(("h1", &c2))).unwrap().unwrap();
    assert_eq!(r, IngestReport::default());
    assert_eq!(s.log_lease("h1", t0(), LEASE).unwrap(), Some(c2));
}

fn the_poller_lease_is_one_holders_until_it_expires(b: &dyn Backend) {
    let s = b.open();
    let other = b.open();
    assert!(s.log_lease("h1", t0(), LEASE).unwrap().is_some());
    assert!(other.log_lease("h2", t0() + secs(1), LEASE).unwrap().is_none(), "h1 holds it");
    assert!(s.log_lease("h1", t0() + secs(20), LEASE).unwrap().is_some(), "renewed");
    assert!(other.log_lease("h2", t0() + secs(40), LEASE).unwrap().is_none(), "the renewal counts from 20 s");
    assert!(other.log_lease("h2", t0() + secs(51), LEASE).unwrap().is_some(), "taken over after expiry");
    assert!(s.log_lease("h1", t0() + secs(52), LEASE).unwrap().is_none());
}

fn a_holder_that_lost_the_lease_stores_nothing(b: &dyn Backend) {
    let s = b.open();
    s.log_lease("h1", t0(), LEASE).unwrap().unwrap();
    s.log_lease("h2", t0() + secs(31), LEASE).unwrap().unwrap();
    let stale = log_cursor("https://okta/api/v1/logs?after=stale", "2024-05-01T10:00:00.000000000Z");
    let page = [new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["p"])];
    assert_eq!(s.ingest_page(Source::SystemLog, &page, Some(("h1", &stale))).unwrap(), None);
    assert!(s.event("e1").unwrap().is_none(), "nothing of the page was kept");
    assert_eq!(s.log_lease("h2", t0() + secs(32), LEASE).unwrap(), Some(LogCursor::default()));
}

fn search_events_filters_by_source(b: &dyn Backend) {
    let s = b.open();
    s.ingest(None, &[new(add("h", "2024-05-01T10:00:00.000Z", "u1", "g1"), &[])]).unwrap();
    s.ingest_page(Source::SystemLog, &[new(add("l", "2024-05-01T10:00:01.000Z", "u2", "g1"), &[])], None).unwrap();
    s.ingest_page(Source::Reconcile, &[new(add("r", "2024-05-01T10:00:02.000Z", "u3", "g1"), &[])], None).unwrap();
    let by = |source| search(&*s, EventFilter { source, ..Default::default() });
    assert_eq!(by(Some(Source::SystemLog)), ["l"]);
    assert_eq!(by(Some(Source::Hook)), ["h"]);
    assert_eq!(by(Some(Source::Reconcile)), ["r"]);
    assert_eq!(by(None).len(), 3);
    let page = s.search_events(&EventFilter { limit: 5, ..Default::default() }).unwrap();
    let sources: Vec<&str> = page.events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["reconcile", "system_log", "hook"]);
}

fn remove(uuid: &str, published: &str, user: &str) -> Event {
    event(uuid, "group.user_membership.remove", published, Some(user), Some("g"))
}

fn guard_rule(max: u32) -> GuardRule {
    GuardRule {
        event_types: vec!["group.user_membership.remove".into()],
        max_per_window: max,
        window: Duration::from_secs(600),
    }
}

fn claim_guarded_at(s: &dyn Store, at: DateTime<Utc>, max: u32) -> ClaimBatch {
    s.claim_guarded("h", at, LEASE, 10, &any, &|p: &str| (p == "p").then(|| guard_rule(max))).unwrap()
}

fn finish_all(s: &dyn Store, claims: &[Claim]) {
    for c in claims {
        let ok = attempt(AttemptResult::Done { summary: "ok".into() });
        assert!(s.complete(&c.delivery_id, &c.lease_token, Some(&ok), &Next::Done).unwrap());
    }
}

fn held_uuids(s: &dyn Store) -> Vec<String> {
    s.deliveries(Some(Status::Held), 100, None).unwrap().0.into_iter().map(|d| d.event_id).collect()
}

fn the_guard_holds_past_max_per_window_until_an_operator_releases(b: &dyn Backend) {
    let s = b.open();
    let p = |i: u32| format!("2024-05-01T10:00:0{i}.000Z");
    let mut batch: Vec<NewEvent> =
        (1..=4).map(|i| new(remove(&format!("r{i}"), &p(i), &format!("u{i}")), &["p"])).collect();
    batch.push(new(add("a5", &p(5), "u5", "g"), &["p"]));
    s.ingest(None, &batch).unwrap();

    // Two removals may begin; the third trips the guard, the fourth is held too; adds pass.
    let first = claim_guarded_at(&*s, t0(), 2);
    assert_eq!(uuids(&first.claims), ["r1", "r2", "a5"]);
    let held: Vec<(&str, bool)> = first.held.iter().map(|h| (h.plugin.as_str(), h.trips)).collect();
    assert_eq!(held, [("p", true), ("p", false)]);
    assert_eq!(held_uuids(&*s), ["r3", "r4"]);
    assert_eq!(status_of(&*s, "r3", "p").status, Status::Held);
    finish_all(&*s, &first.claims);
    assert!(claim_guarded_at(&*s, t0() + secs(1), 2).claims.is_empty());

    // Tripped until decided, even after the window has passed.
    s.ingest(None, &[new(remove("r6", &p(6), "u6"), &["p"])]).unwrap();
    let later = claim_guarded_at(&*s, t0() + secs(3600), 2);
    assert!(later.claims.is_empty());
    assert_eq!(later.held.iter().map(|h| h.trips).collect::<Vec<_>>(), [false]);
    let q = s.queue_stats(t0()).unwrap().plugins.into_iter().find(|q| q.plugin == "p").unwrap();
    assert_eq!((q.held, q.done), (3, 3));
    assert!(s.counts().unwrap().contains(&("p".to_string(), Status::Held, 3)));

    // Release: all run, in order, whatever the count; the window starts afresh.
    assert_eq!(s.release_held("p", t0() + secs(3601)).unwrap(), 3);
    assert_eq!(s.release_held("p", t0() + secs(3601)).unwrap(), 0);
    let released = claim_guarded_at(&*s, t0() + secs(3602), 2);
    assert_eq!(uuids(&released.claims), ["r3", "r4", "r6"]);
    assert!(released.held.is_empty());
    finish_all(&*s, &released.claims);
    s.ingest(None, &[new(remove("r7", &p(7), "u7"), &["p"]), new(remove("r8", &p(8), "u8"), &["p"])]).unwrap();
    assert_eq!(uuids(&claim_guarded_at(&*s, t0() + secs(3603), 2).claims), ["r7", "r8"]);
}

fn held_and_discarded_survive_reopen_and_a_replayed_held_delivery_runs(b: &dyn Backend) {
    let s = b.open();
    let p = |i: u32| format!("2024-05-01T10:00:0{i}.000Z");
    s.ingest(
        None,
        &[
            new(remove("r1", &p(1), "u1"), &["p"]),
            new(remove("r2", &p(2), "u2"), &["p"]),
            new(remove("r3", &p(3), "u3"), &["p"]),
        ],
    )
    .unwrap();
    let first = claim_guarded_at(&*s, t0(), 1);
    assert_eq!(uuids(&first.claims), ["r1"]);
    finish_all(&*s, &first.claims);
    assert_eq!(held_uuids(&*s), ["r2", "r3"]);
    // A later event about a held delivery's user waits behind it (per-user order).
    s.ingest(None, &[new(add("a3", &p(4), "u3", "g"), &["p"])]).unwrap();
    drop(s);

    let s = b.open();
    let again = claim_guarded_at(&*s, t0() + secs(1), 1);
    assert!(again.claims.is_empty() && again.held.is_empty(), "still tripped after a reopen");
    assert_eq!(held_uuids(&*s), ["r2", "r3"]);

    // Replaying one held delivery runs it, whatever the guard says.
    let r2 = status_of(&*s, "r2", "p").id;
    assert_eq!(s.replay(&r2).unwrap(), ReplayOutcome::Accepted);
    let replayed = claim_guarded_at(&*s, t0() + secs(2), 1);
    assert_eq!(uuids(&replayed.claims), ["r2"]);
    assert!(replayed.claims[0].replay);
    finish_all(&*s, &replayed.claims);

    assert_eq!(s.discard_held("p", t0() + secs(3)).unwrap(), 1);
    assert_eq!(s.discard_held("p", t0() + secs(3)).unwrap(), 0);
    drop(s);

    let s = b.open();
    let r3 = status_of(&*s, "r3", "p");
    assert_eq!((r3.status, r3.attempts), (Status::Discarded, 0));
    assert!(s.attempts(&r3.id).unwrap().is_empty(), "a discarded delivery never ran");
    assert!(held_uuids(&*s).is_empty());
    assert_eq!(s.deliveries(Some(Status::Discarded), 10, None).unwrap().0.len(), 1);
    let q = s.queue_stats(t0()).unwrap().plugins.into_iter().find(|q| q.plugin == "p").unwrap();
    assert_eq!((q.held, q.discarded), (0, 1));
    // With nothing held, the user's later add runs; the discarded removal never does.
    assert_eq!(uuids(&claim_guarded_at(&*s, t0() + secs(4), 1).claims), ["a3"]);
    assert_eq!(status_of(&*s, "r3", "p").status, Status::Discarded);
}
