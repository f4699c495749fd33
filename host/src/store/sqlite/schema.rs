//! Numbered schema migrations; append only, never edit a released one.
//!
//! Migration 2 (events, deliveries, attempts):
//!
//! - `events`: one row per Okta LogEvent, keyed by its `uuid` (the de-duplication key).
//!   `published` is kept as Okta sent it, `published_key` is its sortable UTC form;
//!   `subject` (the `User` target id) and `group_ids` (JSON array of `UserGroup` target ids)
//!   are what ordering and supersede look at; `raw` is the LogEvent JSON a claim rebuilds
//!   the event from.
//! - `deliveries`: one row per (event, plugin). `seq` is the ingest order (the tie-break
//!   between equal `published` times, and the paging order); `id` is `d_` + `seq` as 16 hex
//!   digits, so text order is ingest order. `subject` and `published_key` are copied from the
//!   event so the claim query needs no join to decide order. `attempts` counts plugin runs;
//!   `superseded_by` names the later event when the delivery ended without running;
//!   `lease_*` describe the live claim of a running delivery.
//! - `attempts`: the execution history, one row per run (or per supersede decision),
//!   numbered from 1 within a delivery.
//!
//! Migration 3 (what the operator console searches):
//!
//! - `events.subject_login` / `events.subject_name`: the `alternateId` (Okta login) and
//!   `displayName` of the event's first `User` target, the same target as `subject`.
//! - `event_groups`: one row per distinct `UserGroup` target id of an event, with its
//!   `displayName`, so "which events touched group X" is a plain indexed join.
//! - `events_received` orders the console's list (newest first); `attempts_started` serves
//!   the attempts-per-minute chart, which reads only the last hour.
//! - Existing rows are backfilled from `raw` (the LogEvent JSON) with SQLite's JSON
//!   functions, picking the same targets, in the same order, as ingest does.

//!
//! Migration 4 (backfill from the System Log):
//!
//! - `events.source`: how the event first arrived (`hook`, `system_log`, `reconcile`); rows
//!   from before it came by hook.
//! - `log_cursor`: one row per poller (`system_log`): the cursor (`next_url`, the last
//!   `Link rel="next"`), the `filter` it belongs to, the latest `published` seen, and the
//!   poller's lease (`holder`, `lease_until`). The cursor moves in the transaction that stores
//!   its page's events.

//!
//! Migration 5 (the guard, docs/contract.md "Guard"):
//!
//! - `deliveries.status` admits `held` and `discarded` too. SQLite cannot change a CHECK
//!   constraint in place, so the table is rebuilt (create, copy, drop, rename, re-index; the
//!   store turns foreign keys off around migrations for this, as SQLite's documentation
//!   prescribes).
//! - `deliveries.started_at`: when the delivery was first claimed to run (what the guard
//!   counts); backfilled from the first attempt, or the last update of one that left pending.
//! - `deliveries.guard_exempt`: an operator released or replayed it; the guard lets it run.
//! - `guard_resets`: per plugin, when its held deliveries were last released (a release
//!   starts a fresh window).

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE plugin_kv (
        plugin TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (plugin, key)
    ) WITHOUT ROWID;",
    ),
    (
        2,
        "CREATE TABLE events (
        uuid TEXT PRIMARY KEY,
        event_type TEXT NOT NULL,
        published TEXT NOT NULL,
        published_key TEXT NOT NULL,
        received_at TEXT NOT NULL,
        okta_delivery_id TEXT,
        subject TEXT,
        group_ids TEXT NOT NULL,
        raw TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        event_uuid TEXT NOT NULL REFERENCES events (uuid),
        plugin TEXT NOT NULL,
        subject TEXT,
        published_key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'retrying', 'done', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error TEXT,
        plugin_version TEXT,
        superseded_by TEXT,
        replay INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_token TEXT,
        lease_until TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (event_uuid, plugin)
    );
    -- The claim scan: one plugin's queued deliveries in ingest order.
    CREATE INDEX deliveries_queued ON deliveries (plugin, seq) WHERE status IN ('pending', 'retrying');
    -- Per-(plugin, subject) order checks, and supersede's search for a later done event.
    CREATE INDEX deliveries_subject ON deliveries (plugin, subject, status, published_key, seq);
    -- The API's list by status, paged by id; also finds running ones (leases, counts).
    CREATE INDEX deliveries_status ON deliveries (status, id);
    CREATE TABLE attempts (
        delivery_id TEXT NOT NULL REFERENCES deliveries (id),
        number INTEGER NOT NULL,
        plugin_version TEXT NOT NULL,
        plugin_sha256 TEXT NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        result TEXT NOT NULL,
        error TEXT,
        log TEXT NOT NULL,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;",
    ),
    (
        3,
        "ALTER TABLE events ADD COLUMN subject_login TEXT;
    ALTER TABLE events ADD COLUMN subject_name TEXT;
    CREATE TABLE event_groups (
        event_uuid TEXT NOT NULL REFERENCES events (uuid),
        group_id TEXT NOT NULL,
        group_name TEXT,
        position INTEGER NOT NULL,
        PRIMARY KEY (event_uuid, group_id)
    ) WITHOUT ROWID;
    CREATE INDEX events_received ON events (received_at, uuid);
    CREATE INDEX attempts_started ON attempts (started_at);
    UPDATE events SET
        subject_login = (
            SELECT json_extract(t.value, '$.alternateId') FROM json_each(events.raw, '$.target') t
            WHERE json_extract(t.value, '$.type') = 'User' ORDER BY t.key LIMIT 1),
        subject_name = (
            SELECT json_extract(t.value, '$.displayName') FROM json_each(events.raw, '$.target') t
            WHERE json_extract(t.value, '$.type') = 'User' ORDER BY t.key LIMIT 1)
    WHERE json_type(raw, '$.target') = 'array';
    INSERT INTO event_groups (event_uuid, group_id, group_name, position)
        SELECT e.uuid, COALESCE(json_extract(t.value, '$.id'), ''),
               json_extract(t.value, '$.displayName'), t.key
        FROM events e, json_each(e.raw, '$.target') t
        WHERE json_type(e.raw, '$.target') = 'array' AND json_extract(t.value, '$.type') = 'UserGroup'
        ORDER BY e.uuid, t.key
    ON CONFLICT (event_uuid, group_id) DO NOTHING;",
    ),
    (
        4,
        "ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'hook'
        CHECK (source IN ('hook', 'system_log', 'reconcile'));
    CREATE TABLE log_cursor (
        name TEXT PRIMARY KEY,
        next_url TEXT,
        filter TEXT,
        last_published TEXT,
        holder TEXT,
        lease_until TEXT,
        updated_at TEXT NOT NULL
    );",
    ),
    (
        5,
        "CREATE TABLE deliveries_v5 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        event_uuid TEXT NOT NULL REFERENCES events (uuid),
        plugin TEXT NOT NULL,
        subject TEXT,
        published_key TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'running', 'retrying', 'held', 'done', 'dead', 'discarded')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error TEXT,
        plugin_version TEXT,
        superseded_by TEXT,
        replay INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_token TEXT,
        lease_until TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        guard_exempt INTEGER NOT NULL DEFAULT 0,
        UNIQUE (event_uuid, plugin)
    );
    INSERT INTO deliveries_v5 (seq, id, event_uuid, plugin, subject, published_key, status, attempts,
                               next_attempt_at, last_error, plugin_version, superseded_by, replay,
                               lease_owner, lease_token, lease_until, created_at, updated_at, started_at)
        SELECT seq, id, event_uuid, plugin, subject, published_key, status, attempts,
               next_attempt_at, last_error, plugin_version, superseded_by, replay,
               lease_owner, lease_token, lease_until, created_at, updated_at,
               COALESCE((SELECT MIN(a.started_at) FROM attempts a WHERE a.delivery_id = deliveries.id),
                        CASE WHEN status <> 'pending' THEN updated_at END)
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v5 RENAME TO deliveries;
    CREATE INDEX deliveries_queued ON deliveries (plugin, seq) WHERE status IN ('pending', 'retrying');
    CREATE INDEX deliveries_subject ON deliveries (plugin, subject, status, published_key, seq);
    CREATE INDEX deliveries_status ON deliveries (status, id);
    -- The guard's count of recent first starts per plugin.
    CREATE INDEX deliveries_started ON deliveries (plugin, started_at) WHERE started_at IS NOT NULL;
    CREATE TABLE guard_resets (
        plugin TEXT PRIMARY KEY,
        reset_at TEXT NOT NULL
    );",
    ),
];
