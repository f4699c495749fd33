//! A well-behaved plugin that does trivial work and no I/O: it names the event and its
//! user. The runtime benchmark and the "host keeps serving" checks use it.

wit_bindgen::generate!({ world: "plugin", path: "../../../wit" });

use exports::hookhost::plugin::handler::{Event, Failure, Guest, Outcome};

struct Echo;

impl Guest for Echo {
    fn handle(event: Event) -> Result<Outcome, Failure> {
        let user =
            event.targets.iter().find(|t| t.kind == "User").and_then(|t| t.alternate_id.as_deref()).unwrap_or("nobody");
        Ok(Outcome { summary: format!("{} for {user}", event.event_type) })
    }
}

export!(Echo);
