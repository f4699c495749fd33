//! hookhost's integration tests, one binary so the host links once. One module per feature.

mod support;

mod backfill;
mod bad_input;
mod certificate_credentials;
mod console;
mod crash_recovery;
mod egress;
mod fan_out;
mod fault_soak;
mod graph_guest;
mod guard;
mod hardening;
mod hostile_serve;
mod hot_reload;
mod ingest_okta;
mod okta_oauth;
mod pacing;
mod plugin_cli;
mod plugin_new;
mod reconcile;
mod sandbox_limits;
mod scale_out;
mod secrets_scan;
mod serve_e2e;
mod signed_bundles;
mod signing_keys;
mod telemetry;
mod webhook_forward;
