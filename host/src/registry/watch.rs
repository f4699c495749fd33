//! Watches the plugin directory and syncs a plugin once its files have settled.
//!
//! Files do not arrive in one piece. `cp` creates the file, writes it in chunks and closes
//! it; an operator copies `x.wasm` and then `x.toml` a moment apart; editors write
//! `.x.toml.swp`, `x.toml~` or `x.toml.tmp` and rename; `mv` is atomic. Acting on the
//! first event would compile half a wasm or pair a new wasm with the old manifest, so
//! events are collected per plugin name (the file stem) and a plugin is synced only when:
//!
//! - nothing happened to its files for [`SETTLE`] and every file written since the last
//!   sync was closed (inotify's close-after-write) or renamed into place; or
//! - nothing happened for [`QUIET`], whatever is open (a writer that stalls, or a platform
//!   that reports no close events).
//!
//! Even so, a sync only trusts what it can check: a truncated wasm fails to compile and the
//! old version keeps serving; the next write event tries again. A bundle with one file of
//! the pair is "not yet complete": the watcher waits one [`QUIET`] more for the other file
//! and only then records a failure naming it.
//!
//! Reads (including the host's own, when it loads a bundle) are not changes and are
//! ignored, as are dotfiles, editor leftovers, `*.tmp` and the cache directory (see
//! [`bundle_name`](super::bundle_name)). If the kernel's event queue overflows, every
//! plugin is looked at again. The recommended deploy step, which needs none of this
//! guesswork, is: write `x.wasm.tmp` and `x.toml.tmp` beside the bundle, then rename them
//! over `x.wasm` and `x.toml` (README, "Deploying a new plugin version").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Registry, SyncOutcome};

/// Quiet time after the last event, once every write is closed. Long enough for `cp a.wasm
/// …; cp a.toml …` in a script or both renames of a deploy to land in one sync; short
/// enough that a swap is live in well under a second.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Quiet time after which a plugin is synced even with a write still open, and how long a
/// half-present bundle may wait for its other file before that is a failure.
pub const QUIET: Duration = Duration::from_secs(1);

/// What happened to one file, as far as settling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or written: more may follow until it is closed.
    Writing,
    /// Closed after writing, or renamed into place: complete.
    Written,
    /// Renamed away, deleted, or its metadata changed: a change, with nothing left open.
    Other,
}

/// How a notify event kind counts; `None` for events that are not changes (opens, reads,
/// closes without writing — the host's own reads among them).
pub fn classify(kind: &EventKind) -> Option<Change> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Written),
        EventKind::Access(_) => None,
        // Reported together with its own From and To events.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(Change::Written),
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Modify(ModifyKind::Metadata(_)) => Some(Change::Other),
        EventKind::Create(_) | EventKind::Modify(_) => Some(Change::Writing),
        EventKind::Remove(_) | EventKind::Any | EventKind::Other => Some(Change::Other),
    }
}

/// One plugin's files since its last sync.
#[derive(Debug)]
struct Pending {
    last_event: Instant,
    /// Files written and not yet closed or renamed into place.
    writing: BTreeSet<PathBuf>,
    /// The last sync found one file of the pair missing; the next one decides.
    incomplete: bool,
}

impl Pending {
    fn due(&self, settle: Duration, quiet: Duration) -> Instant {
        if self.incomplete || !self.writing.is_empty() {
            self.last_event + quiet
        } else {
            self.last_event + settle
        }
    }
}

/// Collects file events per plugin name and says which plugins have settled.
#[derive(Debug)]
pub struct Debouncer {
    settle: Duration,
    quiet: Duration,
    pending: BTreeMap<String, Pending>,
}

impl Debouncer {
    pub fn new(settle: Duration, quiet: Duration) -> Debouncer {
        Debouncer { settle, quiet, pending: BTreeMap::new() }
    }

    fn entry(&mut self, name: &str, now: Instant) -> &mut Pending {
        let p = self.pending.entry(name.to_owned()).or_insert_with(|| Pending {
            last_event: now,
            writing: BTreeSet::new(),
            incomplete: false,
        });
        p.last_event = now;
        p.incomplete = false;
        p
    }

    /// Notes a change to `path`, a file of plugin `name`.
    pub fn observe(&mut self, name: &str, path: &Path, change: Change, now: Instant) {
        let p = self.entry(name, now);
        match change {
            Change::Writing => {
                p.writing.insert(path.to_path_buf());
            }
            Change::Written | Change::Other => {
                p.writing.remove(path);
            }
        }
    }

    /// Asks for plugin `name` to be looked at once things are quiet (a rescan).
    pub fn touch(&mut self, name: &str, now: Instant) {
        self.entry(name, now);
    }

    /// The sync of `name` found one file missing: look again after [`QUIET`] unless
    /// something arrives first.
    pub fn incomplete(&mut self, name: &str, now: Instant) {
        let p = self.entry(name, now);
        p.incomplete = true;
    }

    /// When the next plugin settles, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due(self.settle, self.quiet)).min()
    }

    /// The plugins that have settled by `now`, each with whether its last sync found it
    /// incomplete (then a missing file is a failure, no longer a wait).
    pub fn take_ready(&mut self, now: Instant) -> Vec<(String, bool)> {
        let (settle, quiet) = (self.settle, self.quiet);
        let ready: Vec<(String, bool)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due(settle, quiet) <= now)
            .map(|(n, p)| (n.clone(), p.incomplete))
            .collect();
        for (n, _) in &ready {
            self.pending.remove(n);
        }
        ready
    }
}

/// Starts watching `registry`'s directory; the returned task syncs plugins as their files
/// settle, until the runtime shuts down.
///
/// # Errors
/// The directory cannot be watched (missing, unreadable, or the inotify watch limit is
/// reached); the message names it and the fix. Manual rescans still work then.
pub fn spawn(registry: Arc<Registry>) -> Result<tokio::task::JoinHandle<()>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the service is shutting down.
        let _ = tx.send(event);
    })
    .map_err(|e| format!("cannot start watching plugin files: {e}; set [plugins] watch = false and use POST /api/plugins/reload or SIGHUP"))?;
    watcher
        .watch(registry.dir(), RecursiveMode::NonRecursive)
        .map_err(|e| {
            format!(
                "{}: cannot watch the plugin directory: {e}; create it (or fix [plugins] dir), or set [plugins] watch = false and use POST /api/plugins/reload or SIGHUP",
                registry.dir().display()
            )
        })?;
    Ok(tokio::spawn(run(registry, watcher, rx)))
}

async fn run(
    registry: Arc<Registry>,
    watcher: RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
) {
    // Dropping the watcher stops the events; it lives as long as this task.
    let _watcher = watcher;
    let mut debounce = Debouncer::new(SETTLE, QUIET);
    loop {
        let due = debounce.next_due();
        tokio::select! {
            event = events.recv() => {
                let now = Instant::now();
                match event {
                    None => break,
                    Some(Ok(event)) => {
                        if event.need_rescan() {
                            tracing::warn!("plugin directory events were lost (queue overflow); looking at every plugin again");
                            for name in registry.known_names() {
                                debounce.touch(&name, now);
                            }
                        }
                        let Some(change) = classify(&event.kind) else { continue };
                        for path in &event.paths {
                            if let Some(name) = registry.bundle_name_of(path) {
                                debounce.observe(&name, path, change, now);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching the plugin directory failed; looking at every plugin again");
                        for name in registry.known_names() {
                            debounce.touch(&name, now);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                for (name, was_incomplete) in debounce.take_ready(Instant::now()) {
                    let r = registry.clone();
                    let n = name.clone();
                    match tokio::task::spawn_blocking(move || r.sync(&n, !was_incomplete)).await {
                        Ok(SyncOutcome::Incomplete { missing }) => {
                            tracing::info!(plugin = %name, missing = %missing.display(), "bundle not complete yet; waiting for the other file");
                            debounce.incomplete(&name, Instant::now());
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(plugin = %name, error = %e, "syncing the plugin failed unexpectedly; the next change to its files retries"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_waits_for_close_and_a_rename_settles_fast() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        let t0 = Instant::now();
        let wasm = Path::new("/p/echo.wasm");
        let toml = Path::new("/p/echo.toml");
        // cp echo.wasm: created and written, not closed yet.
        d.observe("echo", wasm, Change::Writing, t0);
        d.observe("echo", wasm, Change::Writing, t0 + ms(5));
        assert!(d.take_ready(t0 + ms(500)).is_empty(), "an open write holds the sync back");
        d.observe("echo", wasm, Change::Written, t0 + ms(600));
        // cp echo.toml a moment later: still one sync for both.
        d.observe("echo", toml, Change::Writing, t0 + ms(650));
        d.observe("echo", toml, Change::Written, t0 + ms(651));
        assert!(d.take_ready(t0 + ms(700)).is_empty());
        assert_eq!(d.next_due(), Some(t0 + ms(751)));
        assert_eq!(d.take_ready(t0 + ms(751)), vec![("echo".to_string(), false)]);
        assert_eq!(d.next_due(), None);

        // mv echo.toml.tmp echo.toml: complete at once.
        d.observe("echo", toml, Change::Written, t0 + ms(2000));
        assert_eq!(d.take_ready(t0 + ms(2100)), vec![("echo".to_string(), false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_writer_is_synced_after_quiet_and_incomplete_waits_once() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        let t0 = Instant::now();
        d.observe("a", Path::new("/p/a.wasm"), Change::Writing, t0);
        assert!(d.take_ready(t0 + ms(999)).is_empty());
        assert_eq!(d.take_ready(t0 + ms(1000)), vec![("a".to_string(), false)]);

        d.incomplete("a", t0 + ms(1000));
        assert!(d.take_ready(t0 + ms(1500)).is_empty());
        assert_eq!(d.take_ready(t0 + ms(2000)), vec![("a".to_string(), true)]);

        // A new event in between resets the wait.
        d.incomplete("a", t0 + ms(3000));
        d.observe("a", Path::new("/p/a.toml"), Change::Written, t0 + ms(3200));
        assert_eq!(d.take_ready(t0 + ms(3300)), vec![("a".to_string(), false)]);
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{CreateKind, DataChange, RemoveKind};
        assert_eq!(classify(&EventKind::Access(AccessKind::Open(AccessMode::Any))), None);
        assert_eq!(classify(&EventKind::Access(AccessKind::Close(AccessMode::Read))), None);
        assert_eq!(classify(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Some(Change::Written));
        assert_eq!(classify(&EventKind::Create(CreateKind::File)), Some(Change::Writing));
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Some(Change::Writing));
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::To))), Some(Change::Written));
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::From))), Some(Change::Other));
        assert_eq!(classify(&EventKind::Remove(RemoveKind::File)), Some(Change::Other));
    }
}
