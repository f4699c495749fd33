//! A plugin built against the FROZEN contract `hookhost:plugin@0.1.0` (`wit/0.1.0/`), kept
//! so the suite proves the host still loads and runs such components after 0.2.0: it
//! handles events (naming the event, its user and a KV round trip in a log line, through the
//! 0.1.0 `kv` and `log` imports) and cannot reconcile.
//! Do not move it to `wit/plugin.wit`.

wit_bindgen::generate!({ world: "plugin", path: "../../../wit/0.1.0" });

use exports::hookhost::plugin::handler::{Event, Failure, Guest, Outcome};
use hookhost::plugin::{kv, log};

struct Legacy;

impl Guest for Legacy {
    fn handle(event: Event) -> Result<Outcome, Failure> {
        let user = event.targets.iter().find(|t| t.kind == "User").and_then(|t| t.alternate_id.clone());
        let user = user.unwrap_or_else(|| "nobody".into());
        let seen = kv::get("seen").map_err(Failure::Permanent)?.unwrap_or_default().parse::<u64>().unwrap_or(0) + 1;
        kv::set("seen", &seen.to_string()).map_err(Failure::Permanent)?;
        let summary = format!("legacy 0.1.0 handled {} for {user} (event {seen})", event.event_type);
        log::log(log::Level::Info, &summary);
        Ok(Outcome { summary })
    }
}

export!(Legacy);
