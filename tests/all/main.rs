//! hookhost's integration tests, one binary so the host links once. One module per feature.

mod support;

mod graph_guest;
mod plugin_cli;
mod sandbox_limits;
