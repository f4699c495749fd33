//! The host side of the WIT imports a plugin may call: `config`, `secrets`, `http`, `kv`,
//! `keys` and `log`. Each module opens with what it grants and what it refuses. They live
//! apart from the host's own `config`, `secret` and `kv` modules, whose names they share
//! but whose job (reading host.toml, resolving secret references, the KV backends) is not
//! theirs.

pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod keys;
pub(crate) mod kv;
pub(crate) mod log;
pub(crate) mod secrets;
