//! hookhost's integration tests, one binary so the host links once. One module per feature.

mod support;

mod graph_guest;
mod hot_reload;
mod ingest_okta;
mod plugin_cli;
mod sandbox_limits;
mod serve_e2e;
