//! `make bench BENCH=reconcile`: what planning reconcile costs at scale, in time and in calls.
//!
//! The Okta emulator holds an `O365Guest` group of [`MEMBERS`] users; the Graph emulator a
//! tenant of [`GUESTS`] guests; graph-guest's KV (the SQLite store of a fresh `host.toml`)
//! maps most members to their guests, with seeded drift: mapped guests deleted in Entra,
//! members never mapped, mapped users no longer members, and guests nobody mapped. The real
//! `hookhost reconcile --json` (report only) is timed from spawn to exit; the emulators count
//! the pages it read. The plan must hold exactly the seeded drift, within 50 Okta member pages
//! (+1 group lookup) and 11 Graph pages. Last line: one JSON object.

use std::process::Command;
use std::time::Instant;

use hookhost::runtime::KvBackend;
use hookhost::store::SqliteStore;
use hookhost_tests::serve::{free_port, hookhost_bin, ServeSetup};
use hookhost_tests::{GraphEmulator, OktaEmulator, TenantConfig};
use serde_json::Value;

const MEMBERS: usize = 10_000;
const GUESTS: usize = 10_000;
/// Members whose mapped guest was deleted in Entra (planned adds).
const DELETED: usize = 40;
/// Members graph-guest never saw (planned adds).
const UNMAPPED: usize = 30;
/// Mapped users no longer in the group whose guest still exists (planned removes).
const LEFT: usize = 20;
/// Guests in the tenant graph-guest never made (never planned).
const UNMANAGED: usize = 50;
const TOKEN: &str = "bench-okta-token";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.expect("graph emulator");
    let okta = OktaEmulator::start(TOKEN).await.expect("okta emulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = ServeSetup {
        okta_extra: format!("org_url = \"{}\"\napi_token = {{ value = \"{TOKEN}\" }}\n", okta.base_url()),
        store_url: Some("sqlite://hookhost.db".into()),
        graph_guest: true,
        ..ServeSetup::plain()
    };
    setup.write(dir.path(), free_port(), Some(&graph)).expect("host.toml");

    // Seed: members, guests, and graph-guest's mapping (as its add flow records it).
    let started = Instant::now();
    let group = okta.add_group("O365Guest");
    let store = SqliteStore::open(&dir.path().join("hookhost.db")).expect("store");
    let map = |okta_id: &str, guest: &str, login: &str| {
        store.set("graph-guest", &format!("user:{okta_id}"), guest).expect("kv");
        store.set("graph-guest", &format!("login:{okta_id}"), login).expect("kv");
    };
    let present = MEMBERS - DELETED - UNMAPPED;
    for i in 0..MEMBERS {
        let login = format!("m{i:05}@partner.example");
        let id = okta.add_user(&login, "Member", &format!("{i}"));
        okta.add_member(&group, &id);
        if i < present {
            map(&id, &graph.seed_guest(&login, &format!("Member {i}")), &login);
        } else if i < present + DELETED {
            map(&id, &format!("00000000-0000-4000-8000-{i:012}"), &login);
        }
    }
    for i in 0..LEFT {
        let login = format!("left{i:03}@partner.example");
        let id = okta.add_user(&login, "Left", &format!("{i}"));
        map(&id, &graph.seed_guest(&login, &format!("Left {i}")), &login);
    }
    for i in 0..UNMANAGED {
        graph.seed_guest(&format!("other{i:03}@elsewhere.example"), "Unmanaged");
    }
    let guests = graph.users().iter().filter(|u| u.user_type == "Guest").count();
    assert_eq!(guests, GUESTS, "seeded guests");
    drop(store);
    println!("seeded {MEMBERS} members and {GUESTS} guests in {:.1} s", started.elapsed().as_secs_f64());

    let okta_before = okta.group_pages();
    let journal_before = graph.journal().len();
    let config = dir.path().join("host.toml");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(hookhost_bin().expect("hookhost binary"))
            .args(["reconcile", "--config"])
            .arg(&config)
            .args(["--plugin", "graph-guest", "--json"])
            .output()
    })
    .await
    .expect("join")
    .expect("run hookhost reconcile");
    let plan_s = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hookhost reconcile failed: {}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let adds = plan["add"].as_array().map(Vec::len).unwrap_or(0);
    let removes = plan["remove"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(plan["okta_members"], MEMBERS);
    assert_eq!(adds, DELETED + UNMAPPED, "adds: the deleted and the never-mapped members");
    assert_eq!(removes, LEFT, "removes: the mapped users who left");

    let okta_pages = okta.group_pages() - okta_before;
    let journal = graph.journal();
    let graph_pages = journal[journal_before..].iter().filter(|j| j.method == "GET" && j.path == "/v1.0/users").count();
    let graph_calls = journal.len() - journal_before;
    println!(
        "plan in {plan_s:.2} s: {okta_pages} Okta pages (1 group lookup + member pages of 200), \
         {graph_pages} Graph listing pages ($top=999), {graph_calls} Graph calls in all (token included); \
         {adds} to add, {removes} to remove"
    );
    assert!(okta_pages <= 50 + 1, "{okta_pages} Okta pages");
    assert!(graph_pages <= 11, "{graph_pages} Graph pages");
    println!(
        "{}",
        serde_json::json!({
            "bench": "reconcile",
            "members": MEMBERS,
            "guests": GUESTS,
            "okta_pages": okta_pages,
            "graph_pages": graph_pages,
            "plan_s": (plan_s * 1000.0).round() / 1000.0,
            "adds": adds,
            "removes": removes,
        })
    );
}
