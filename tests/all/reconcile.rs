//! Reconcile end to end: a real `hookhost serve` (SQLite), graph-guest built from source, the
//! Okta emulator's Groups API and the Graph emulator, with drift seeded on both sides. The
//! report must list exactly the right adds and removes, `--apply` must converge through
//! ordinary events, and the Member account and the guest graph-guest never made must see no
//! write. Also: the HTTP endpoint, `max_changes`, and a component built against the frozen
//! `hookhost:plugin@0.1.0`, which still handles events and cannot be reconciled.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use hookhost_tests::{GraphEmulator, OktaEmulator, TenantConfig};
use serde_json::{json, Value};

use crate::support::{
    event_view, free_port, hookhost_bin, start_with, test_manifest, wasm, write_config_with, ServeProcess, ServeSetup,
};

const TOKEN: &str = "okta-reconcile-api-token";

fn okta_lines(okta: &OktaEmulator) -> String {
    format!("org_url = {:?}\napi_token = {{ value = {TOKEN:?} }}\n", okta.base_url())
}

/// `hookhost reconcile --config dir/host.toml --plugin NAME ARGS…`: success, stdout, stderr.
async fn cli(dir: &Path, plugin: &str, args: &[&str]) -> (bool, String, String) {
    let config = dir.join("host.toml");
    let mut cmd = Command::new(hookhost_bin());
    cmd.arg("reconcile").arg("--config").arg(&config).args(["--plugin", plugin]).args(args).current_dir("/");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run hookhost reconcile");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one JSON object `--json` prints.
fn plan_of(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {stdout}");
    serde_json::from_str(lines[0]).expect("--json prints a JSON object")
}

/// (okta_user_id, login) of a plan list, as the plan orders them.
fn ids(list: &Value) -> Vec<(String, Option<String>)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "every change has a reason: {c}");
            (c["okta_user_id"].as_str().unwrap().to_owned(), c["login"].as_str().map(str::to_owned))
        })
        .collect()
}

fn sorted(mut v: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
    v.sort();
    v
}

/// `POST path` with a JSON body and the admin token: status and JSON answer.
async fn post_json(serve: &ServeProcess, path: &str, body: Value) -> (u16, Value) {
    let r = serve
        .admin(reqwest::Method::POST, path)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("admin API answers");
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null))
}

/// Polls until every delivery of these events is done or dead (no time bound: the state
/// decides), then returns the views.
async fn wait_settled(url: &str, uuids: &[String]) -> Vec<Value> {
    loop {
        let mut views = Vec::new();
        for uuid in uuids {
            views.push(event_view(url, uuid).await);
        }
        let settled = views.iter().all(|v| {
            v["deliveries"].as_array().is_some_and(|ds| {
                !ds.is_empty() && ds.iter().all(|d| matches!(d["status"].as_str(), Some("done" | "dead")))
            })
        });
        if settled {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_all_done(views: &[Value]) {
    for v in views {
        for d in v["deliveries"].as_array().unwrap() {
            assert_eq!(d["status"], "done", "{v}");
        }
    }
}

/// A hook delivery of one membership event for an emulated Okta user; waits until handled.
async fn hook(serve: &ServeProcess, okta: &OktaEmulator, kind: Membership, user: &str, group: &str) -> String {
    let u = okta.user(user).expect("seeded user");
    let event = group_membership_event(kind, user, &u.login, &u.first_name, group, "O365Guest", &timestamp(0));
    let uuid = event["uuid"].as_str().unwrap().to_owned();
    assert_eq!(serve.post(vec![event]).await, Some(200));
    assert_all_done(&wait_settled(&serve.url, std::slice::from_ref(&uuid)).await);
    uuid
}

fn guest_id(graph: &GraphEmulator, mail: &str) -> String {
    graph
        .users()
        .into_iter()
        .find(|u| u.user_type == "Guest" && u.mail.as_deref() == Some(mail))
        .unwrap_or_else(|| panic!("a guest for {mail}"))
        .id
}

/// Graph writes (DELETE, PATCH) and invitations that name `id` or `mail`.
fn writes_touching(graph: &GraphEmulator, id: &str, mail: &str) -> Vec<String> {
    let mut out: Vec<String> = graph
        .journal()
        .into_iter()
        .filter(|j| matches!(j.method.as_str(), "DELETE" | "PATCH" | "POST" | "PUT"))
        .filter(|j| j.path.to_ascii_lowercase().contains(&id.to_ascii_lowercase()))
        .map(|j| format!("{} {}", j.method, j.path))
        .collect();
    out.extend(
        graph
            .invitations()
            .into_iter()
            .filter(|i| i.email.eq_ignore_ascii_case(mail))
            .map(|i| format!("invitation for {}", i.email)),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_then_apply_converges_and_never_touches_members_or_unmanaged_guests() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        okta_extra: okta_lines(&okta),
        // 4 planned changes against a limit of 3: applying needs --force.
        extra: "[plugins.graph-guest.reconcile]\nmax_changes = 3\n".into(),
        ..ServeSetup::default()
    };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;

    // Okta: the group, a decoy whose name starts the same (q matches by prefix), users.
    let group = okta.add_group("O365Guest");
    let decoy = okta.add_group("O365Guest-Admins");
    let user = |login: &str, first: &str| okta.add_user(login, first, "Test");
    let a = user("ann@partner.example", "Ann"); // mapped, guest deleted in Entra, still a member
    let b = user("bob@partner.example", "Bob"); // member never seen by hook
    let c = user("cyd@partner.example", "Cyd"); // member never seen by hook
    let d = user("dan@partner.example", "Dan"); // mapped, no longer a member
    let e = user("eve@partner.example", "Eve"); // mapped, member, in sync
    let x = user("xan@partner.example", "Xan"); // only in the decoy group
    for m in [&a, &b, &c, &d, &e] {
        okta.add_member(&group, m);
    }
    okta.add_member(&decoy, &x);

    // The event path makes guests for A, D and E.
    for m in [&a, &d, &e] {
        hook(&serve, &okta, Membership::Add, m, &group).await;
    }
    // Drift: A's guest deleted by hand in Entra; D left the group and the hook was lost.
    assert!(graph.delete_directly(&guest_id(&graph, "ann@partner.example")));
    okta.remove_member(&group, &d);
    let dan_guest = guest_id(&graph, "dan@partner.example");
    // Accounts graph-guest must never touch: an employee and a guest someone else invited.
    let employee = graph.seed_member("emp@contoso.example", "Employee");
    let stranger = graph.seed_guest("stranger@other.example", "Stranger");

    // Report.
    let okta_before = okta.group_pages();
    let (ok, out, err) = cli(dir.path(), "graph-guest", &["--json"]).await;
    assert!(ok, "{out}\n{err}");
    let plan = plan_of(&out);
    assert_eq!(
        plan.as_object().unwrap().keys().cloned().collect::<Vec<_>>(),
        ["add", "applied", "okta_members", "plugin", "remove"],
        "exactly the contract's fields: {plan}"
    );
    assert_eq!(plan["plugin"], "graph-guest");
    assert_eq!(plan["okta_members"], 4, "{plan}");
    assert_eq!(plan["applied"], false);
    let login = |s: &str| Some(s.to_owned());
    assert_eq!(
        sorted(ids(&plan["add"])),
        sorted(vec![
            (a.clone(), login("ann@partner.example")),
            (b.clone(), login("bob@partner.example")),
            (c.clone(), login("cyd@partner.example")),
        ]),
        "{plan}"
    );
    assert_eq!(ids(&plan["remove"]), vec![(d.clone(), login("dan@partner.example"))], "{plan}");
    // One group lookup and one member page (4 members, pages of 200).
    assert_eq!(okta.group_pages() - okta_before, 2);
    let member_pages = okta.requests_to(&format!("/api/v1/groups/{group}/users"));
    assert!(member_pages.iter().all(|r| r.param("limit").as_deref() == Some("200")), "limit=200 per the contract");

    // Apply without --force: over max_changes, nothing stored.
    let (ok, out, err) = cli(dir.path(), "graph-guest", &["--json", "--apply"]).await;
    assert!(!ok, "a plan over max_changes must not apply without --force: {out}");
    assert!(err.contains("max_changes") && err.contains("--force"), "{err}");
    assert_eq!(plan_of(&out)["applied"], false);
    let stored = serve.get_json("/api/events?source=reconcile").await;
    assert_eq!(stored["events"].as_array().map(Vec::len), Some(0), "{stored}");

    // Apply with --force: four ordinary events, processed by the running serve.
    let (ok, out, err) = cli(dir.path(), "graph-guest", &["--json", "--apply", "--force"]).await;
    assert!(ok, "{out}\n{err}");
    let applied = plan_of(&out);
    assert_eq!(applied["applied"], true);
    assert_eq!(sorted(ids(&applied["add"])), sorted(ids(&plan["add"])));
    let uuids: Vec<String> =
        err.lines().filter_map(|l| l.strip_prefix("stored event ")).map(|s| s.trim().to_owned()).collect();
    assert_eq!(uuids.len(), 4, "{err}");
    let views = wait_settled(&serve.url, &uuids).await;
    assert_all_done(&views);
    for v in &views {
        assert_eq!(v["source"], "reconcile", "{v}");
        assert!(matches!(v["event_type"].as_str(), Some("group.user_membership.add" | "group.user_membership.remove")));
    }

    // Converged: a second report is empty.
    let (ok, out, err) = cli(dir.path(), "graph-guest", &["--json"]).await;
    assert!(ok, "{out}\n{err}");
    let again = plan_of(&out);
    assert_eq!(again["add"], json!([]), "{again}");
    assert_eq!(again["remove"], json!([]), "{again}");
    assert_eq!(again["okta_members"], 4);

    // The target: A re-invited, B and C invited, D's guest deleted, E kept.
    let mut guests: Vec<String> =
        graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    guests.sort();
    assert_eq!(
        guests,
        [
            "ann@partner.example",
            "bob@partner.example",
            "cyd@partner.example",
            "eve@partner.example",
            "stranger@other.example"
        ]
    );
    assert!(graph.deleted_users().iter().any(|u| u.id == dan_guest));
    // Never a write for the Member account or the unmanaged guest.
    assert_eq!(writes_touching(&graph, &employee, "emp@contoso.example"), Vec::<String>::new());
    assert_eq!(writes_touching(&graph, &stranger, "stranger@other.example"), Vec::<String>::new());
    assert!(graph.user(&employee).is_some_and(|u| u.account_enabled && u.user_type == "Member"));
    assert!(graph.user(&stranger).is_some_and(|u| u.account_enabled && u.user_type == "Guest"));

    // The same through the HTTP endpoint: E leaves, F joins.
    let f = user("fay@partner.example", "Fay");
    okta.add_member(&group, &f);
    okta.remove_member(&group, &e);
    let endpoint = "/api/plugins/graph-guest/reconcile";
    let r = post_json(&serve, endpoint, json!({"apply": false, "force": false})).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let plan: Value = r.1;
    assert_eq!(ids(&plan["add"]), vec![(f.clone(), login("fay@partner.example"))], "{plan}");
    assert_eq!(ids(&plan["remove"]), vec![(e.clone(), login("eve@partner.example"))], "{plan}");
    assert_eq!(plan["applied"], false);
    let r = post_json(&serve, endpoint, json!({"apply": true, "force": false})).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let plan: Value = r.1;
    assert_eq!(plan["applied"], true, "{plan}");
    serve.settle_all(Duration::from_secs(120)).await;
    let r = post_json(&serve, endpoint, json!({"apply": false})).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let plan: Value = r.1;
    assert_eq!((plan["add"].clone(), plan["remove"].clone()), (json!([]), json!([])), "{plan}");
    let mut guests: Vec<String> =
        graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    guests.sort();
    assert!(
        guests.contains(&"fay@partner.example".to_string()) && !guests.contains(&"eve@partner.example".to_string())
    );
    assert_eq!(writes_touching(&graph, &employee, "emp@contoso.example"), Vec::<String>::new());
    assert_eq!(writes_touching(&graph, &stranger, "stranger@other.example"), Vec::<String>::new());

    // The console's Drift panel reads the last report.
    let reports = serve.get_json("/api/reconcile").await;
    let report = &reports["reports"][0];
    assert_eq!(report["plugin"], "graph-guest", "{reports}");
    assert_eq!(report["add"], json!([]));

    // An unknown body field is refused, naming the shape.
    let r = post_json(&serve, endpoint, json!({"apply": true, "dry": 1})).await;
    assert_eq!(r.0, 400, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_0_1_0_still_handles_events_and_cannot_be_reconciled() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup { okta_extra: okta_lines(&okta), graph_guest: false, ..ServeSetup::default() };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    std::fs::copy(wasm("legacy-v1"), dir.path().join("plugins.d/legacy-v1.wasm")).unwrap();
    std::fs::write(dir.path().join("plugins.d/legacy-v1.toml"), test_manifest("legacy-v1")).unwrap();
    let serve = start_with(dir.path(), port, setup).await;

    let plugins = serve.get_json("/api/plugins").await;
    assert_eq!(plugins["plugins"][0]["state"], "active", "{plugins}");

    // Events: handled as before, KV included.
    let mut uuids = Vec::new();
    for n in 0..2 {
        let event = group_membership_event(
            Membership::Add,
            &format!("00ulegacy{n}"),
            &format!("legacy{n}@example.com"),
            "Legacy",
            "00glegacy",
            "O365Guest",
            &timestamp(n),
        );
        uuids.push(event["uuid"].as_str().unwrap().to_owned());
        assert_eq!(serve.post(vec![event]).await, Some(200));
        // One after the other: the plugin's KV counter is a read-modify-write, and two
        // users' events may run at once.
        wait_settled(&serve.url, &uuids).await;
    }
    let views = wait_settled(&serve.url, &uuids).await;
    assert_all_done(&views);
    let mut summaries = Vec::new();
    for v in &views {
        let id = v["deliveries"][0]["id"].as_str().unwrap().to_owned();
        let attempts = serve.attempts(&id).await;
        assert_eq!(attempts[0]["plugin_version"], "1.0.0");
        let line = attempts[0]["log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["message"].as_str())
            .find(|m| m.starts_with("legacy 0.1.0 handled"))
            .map(str::to_owned);
        summaries.push(line.unwrap_or_else(|| panic!("the 0.1.0 log import reached the history: {attempts:?}")));
    }
    summaries.sort();
    assert!(summaries[0].starts_with("legacy 0.1.0 handled group.user_membership.add for legacy"), "{summaries:?}");
    assert!(summaries.iter().any(|s| s.ends_with("(event 2)")), "KV persists across events: {summaries:?}");

    // Reconcile: a clear refusal, over HTTP and from the CLI.
    let r = post_json(&serve, "/api/plugins/legacy-v1/reconcile", json!({"apply": false, "force": false})).await;
    assert_eq!(r.0, 409, "{}", r.1);
    let body: Value = r.1;
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("hookhost:plugin@0.1.0")
            && message.contains("reconciler")
            && message.contains("docs/plugins.md"),
        "{message}"
    );
    let (ok, out, err) = cli(dir.path(), "legacy-v1", &["--json"]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("hookhost:plugin@0.1.0"), "{err}");
    assert_eq!(okta.group_pages(), 0, "nothing is read from Okta for a plugin that cannot answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_apply_converges_without_storing_a_change_twice() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start(TOKEN).await.unwrap();
    let group = okta.add_group("O365Guest");
    let members: Vec<String> =
        (0..3).map(|i| okta.add_user(&format!("sched{i}@partner.example"), "Sched", "Test")).collect();
    for m in &members {
        okta.add_member(&group, m);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        okta_extra: okta_lines(&okta),
        // Every second: runs keep coming while the first run's events are still queued.
        extra: "[plugins.graph-guest.reconcile]\nevery_secs = 1\nmode = \"apply\"\n".into(),
        ..ServeSetup::default()
    };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;

    // Converged: the last scheduled report is in sync and every guest exists.
    loop {
        let reports = serve.get_json("/api/reconcile").await;
        let r = &reports["reports"][0];
        let in_sync = r["add"] == json!([]) && r["remove"] == json!([]) && r["okta_members"] == 3;
        let guests = graph.users().iter().filter(|u| u.user_type == "Guest").count();
        if in_sync && guests == 3 {
            assert_eq!(r["every_secs"], 1);
            assert_eq!(r["mode"], "apply");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serve.settle_all(Duration::from_secs(120)).await;
    // One event per member: no run stored a change a previous run had already stored.
    let stored = serve.get_json("/api/events?source=reconcile&limit=200").await;
    assert_eq!(stored["events"].as_array().map(Vec::len), Some(3), "{stored}");
    assert_eq!(graph.invitations().len(), 3);
}
