//! `make bench BENCH=reconcile`: what planning reconcile costs at scale, in time and in calls.
//!
//! The Okta emulator holds an `O365Guest` group of [`MEMBERS`] users; the Graph emulator a
//! tenant of [`GUESTS`] guests; graph-guest's KV (the SQLite store of a fresh `host.toml`)
//! maps most members to their guests, with seeded drift: mapped guests deleted in Entra,
//! members never mapped, mapped users no longer members, and guests nobody mapped. The real
//! `hookhost reconcile --json` (report only) is timed from spawn to exit; the emulators count
//! the pages it read. The plan must hold exactly the seeded drift, within 50 Okta member pages
//! (+1 group lookup) and 11 Graph pages. Last line: one JSON object.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hookhost::runtime::KvBackend;
use hookhost::store::SqliteStore;
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

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run `make build` first (make bench does)", path.display());
    path
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.expect("graph emulator");
    let okta = OktaEmulator::start(TOKEN).await.expect("okta emulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).expect("plugins.d");
    std::fs::copy(
        required(workspace().join("target/wasm32-wasip2/release/graph_guest.wasm")),
        plugins.join("graph-guest.wasm"),
    )
    .expect("graph-guest.wasm");
    std::fs::copy(workspace().join("plugins/graph-guest/graph-guest.toml"), plugins.join("graph-guest.toml"))
        .expect("graph-guest.toml");
    let base = graph.base_url();
    let cfg = graph.config();
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            r#"[okta]
org_url = "{okta_url}"
api_token = {{ value = "{TOKEN}" }}
[store]
url = "sqlite://hookhost.db"
[plugins]
dir = "plugins.d"
[plugins.graph-guest]
allowed_hosts = ["{base}"]
[plugins.graph-guest.config]
graph_url = "{base}"
login_url = "{base}"
[plugins.graph-guest.secrets]
tenant_id = {{ value = {tenant:?} }}
client_id = {{ value = {client:?} }}
client_secret = {{ value = {secret:?} }}
"#,
            okta_url = okta.base_url(),
            tenant = cfg.tenant_id,
            client = cfg.client_id,
            secret = cfg.client_secret,
        ),
    )
    .expect("host.toml");

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
        Command::new(required(workspace().join("target/release/hookhost")))
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
