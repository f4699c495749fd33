//! Numbered schema migrations of the PostgreSQL store; append only, never edit a released one.
//!
//! The tables mirror the SQLite store's (see `sqlite/schema.rs` for what each column means),
//! with two PostgreSQL-specific choices:
//!
//! - Every text column that is compared or sorted (ids, plugin names, times) is `COLLATE "C"`:
//!   times are fixed-width RFC 3339 text whose byte order is time order, and ids page by
//!   byte order; a database created with a natural-language collation would otherwise
//!   compare them by its own rules (which may skip punctuation).
//! - Migration 1 already has what the SQLite store's migration 3 added for the operator
//!   console (`events.subject_login`/`subject_name`, `event_groups` and the two indexes).
//! - `seq`, the ingest order, comes from a sequence shared by every host, so delivery ids stay
//!   unique and ordered whoever ingests.
//!
//! - Migration 2 is the SQLite store's migration 4 (`events.source`, `log_cursor`).
//!
//! - Migration 3 is the SQLite store's migration 5 (the guard: `held` and `discarded`,
//!   `started_at`, `guard_exempt`, `guard_resets`); PostgreSQL changes the CHECK in place.
//!
//! Migrations run under an advisory lock ([`MIGRATION_LOCK`]), so two hosts starting at once
//! apply each migration exactly once: the second waits, then finds nothing left to do.

/// `pg_advisory_xact_lock` key held while migrating (an arbitrary constant: "hookhost").
pub(super) const MIGRATION_LOCK: i64 = 0x686f_6f6b_686f_7374;

pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"CREATE TABLE plugin_kv (
        plugin TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    CREATE TABLE events (
        uuid TEXT COLLATE "C" PRIMARY KEY,
        event_type TEXT COLLATE "C" NOT NULL,
        published TEXT NOT NULL,
        published_key TEXT COLLATE "C" NOT NULL,
        received_at TEXT COLLATE "C" NOT NULL,
        okta_delivery_id TEXT,
        subject TEXT COLLATE "C",
        group_ids TEXT NOT NULL,
        raw TEXT NOT NULL,
        subject_login TEXT,
        subject_name TEXT
    );
    CREATE INDEX events_received ON events (received_at, uuid);
    CREATE TABLE event_groups (
        event_uuid TEXT COLLATE "C" NOT NULL REFERENCES events (uuid),
        group_id TEXT COLLATE "C" NOT NULL,
        group_name TEXT,
        position BIGINT NOT NULL,
        PRIMARY KEY (event_uuid, group_id)
    );
    CREATE SEQUENCE delivery_seq;
    CREATE TABLE deliveries (
        seq BIGINT PRIMARY KEY,
        id TEXT COLLATE "C" NOT NULL UNIQUE,
        event_uuid TEXT COLLATE "C" NOT NULL REFERENCES events (uuid),
        plugin TEXT COLLATE "C" NOT NULL,
        subject TEXT COLLATE "C",
        published_key TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'running', 'retrying', 'done', 'dead')),
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at TEXT COLLATE "C",
        last_error TEXT,
        plugin_version TEXT,
        superseded_by TEXT,
        replay BOOLEAN NOT NULL DEFAULT FALSE,
        lease_owner TEXT COLLATE "C",
        lease_token TEXT COLLATE "C",
        lease_until TEXT COLLATE "C",
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL,
        UNIQUE (event_uuid, plugin)
    );
    CREATE INDEX deliveries_queued ON deliveries (plugin, seq) WHERE status IN ('pending', 'retrying');
    CREATE INDEX deliveries_subject ON deliveries (plugin, subject, status, published_key, seq);
    CREATE INDEX deliveries_status ON deliveries (status, id);
    CREATE INDEX deliveries_running ON deliveries (lease_owner, plugin) WHERE status = 'running';
    CREATE TABLE attempts (
        delivery_id TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id),
        number BIGINT NOT NULL,
        plugin_version TEXT NOT NULL,
        plugin_sha256 TEXT NOT NULL,
        started_at TEXT COLLATE "C" NOT NULL,
        duration_ms BIGINT NOT NULL,
        result TEXT NOT NULL,
        error TEXT,
        log TEXT NOT NULL,
        PRIMARY KEY (delivery_id, number)
    );
    CREATE INDEX attempts_started ON attempts (started_at);"#,
    ),
    (
        2,
        r#"ALTER TABLE events ADD COLUMN source TEXT COLLATE "C" NOT NULL DEFAULT 'hook'
        CHECK (source IN ('hook', 'system_log', 'reconcile'));
    CREATE TABLE log_cursor (
        name TEXT COLLATE "C" PRIMARY KEY,
        next_url TEXT,
        filter TEXT,
        last_published TEXT COLLATE "C",
        holder TEXT COLLATE "C",
        lease_until TEXT COLLATE "C",
        updated_at TEXT COLLATE "C" NOT NULL
    );"#,
    ),
    (
        3,
        r#"ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('pending', 'running', 'retrying', 'held', 'done', 'dead', 'discarded'));
    ALTER TABLE deliveries ADD COLUMN started_at TEXT COLLATE "C";
    ALTER TABLE deliveries ADD COLUMN guard_exempt BOOLEAN NOT NULL DEFAULT FALSE;
    UPDATE deliveries SET started_at = COALESCE(
        (SELECT MIN(a.started_at) FROM attempts a WHERE a.delivery_id = deliveries.id),
        CASE WHEN status <> 'pending' THEN updated_at END);
    CREATE INDEX deliveries_started ON deliveries (plugin, started_at) WHERE started_at IS NOT NULL;
    CREATE TABLE guard_resets (
        plugin TEXT COLLATE "C" PRIMARY KEY,
        reset_at TEXT COLLATE "C" NOT NULL
    );"#,
    ),
];
