use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::okta::Event;
use crate::runtime::{Attempt, AttemptResult};
use crate::store::{NewEvent, Next, ReplayOutcome, Status, Store};

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("hookhost-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
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

/// Every test of the suite, once per backend: `store::tests::sqlite::NAME` and
/// `store::tests::postgres::NAME` (which needs the PostgreSQL test server).
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
    NewEvent {
        event,
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
    }
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
    s.event(uuid)
        .unwrap()
        .unwrap()
        .deliveries
        .into_iter()
        .find(|d| d.plugin == plugin)
        .unwrap()
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
    let r = s
        .ingest(Some("okta-1"), &[new(e1.clone(), &["p", "q"]), new(e2, &[])])
        .unwrap();
    assert_eq!((r.stored, r.duplicates, r.deliveries), (2, 0, 2));

    // Okta's retry of the same event inside a new delivery, and a repeat within one batch.
    let e3 = add("e3", "2024-05-01T10:00:02.000Z", "u3", "g1");
    let r = s
        .ingest(Some("okta-2"), &[new(e1, &["p", "q", "r"]), new(e3.clone(), &["p"]), new(e3, &["p"])])
        .unwrap();
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
    let mut failed = attempt(AttemptResult::Retryable {
        message: "graph 429".into(),
        retry_after: Some(Duration::from_secs(5)),
    });
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

    run_to_done(
        event("deact", "user.lifecycle.deactivate", "2024-05-01T12:00:00.000Z", Some("u1"), None),
        "p",
    );
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
        assert_eq!(s.ingest(None, &[new(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g"), &["p"])]).unwrap().duplicates, 1);
    }
}
