//! `hookhost plugin new`: a new plugin crate (Rust) or project (Python, JavaScript) from templates
//! embedded in the binary, so a plugin author needs nothing but `hookhost` to start.
//!
//! Each scaffold is complete on day one: a manifest, the logic in a plain function with a
//! test that runs natively (`cargo test` / `python3 -m unittest` / `npm test`), the component binding, a
//! copy of `wit/plugin.wit` (the contract it is built against), a fixture delivery for
//! `hookhost plugin run`, a Makefile (build, test, check, run, deploy) and a README. The
//! Rust crate carries its own `[workspace]` table, so it builds anywhere — inside another
//! Cargo workspace too. The JavaScript project pins jco and componentize-js exactly, with a
//! `package-lock.json`, so `npm ci` installs the toolchain this host was tested with. The
//! templates live in `scaffold/` beside this file.

use std::path::{Path, PathBuf};

use crate::registry::manifest::valid_plugin_name;

/// The contract every scaffold is built against, as this host speaks it.
const WIT: &str = include_str!("../../wit/plugin.wit");
const EVENT: &str = include_str!("scaffold/event.json.tmpl");

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("scaffold/rust/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("scaffold/rust/lib.rs.tmpl")),
    ("{{name}}.toml", include_str!("scaffold/rust/manifest.toml.tmpl")),
    ("Makefile", include_str!("scaffold/rust/Makefile.tmpl")),
    ("README.md", include_str!("scaffold/rust/README.md.tmpl")),
    (".gitignore", include_str!("scaffold/rust/gitignore.tmpl")),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("scaffold/python/app.py.tmpl")),
    ("logic.py", include_str!("scaffold/python/logic.py.tmpl")),
    ("test_logic.py", include_str!("scaffold/python/test_logic.py.tmpl")),
    ("{{name}}.toml", include_str!("scaffold/python/manifest.toml.tmpl")),
    ("Makefile", include_str!("scaffold/python/Makefile.tmpl")),
    ("README.md", include_str!("scaffold/python/README.md.tmpl")),
    (".gitignore", include_str!("scaffold/python/gitignore.tmpl")),
];

const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("scaffold/js/app.js.tmpl")),
    ("logic.js", include_str!("scaffold/js/logic.js.tmpl")),
    ("logic.test.js", include_str!("scaffold/js/logic.test.js.tmpl")),
    ("package.json", include_str!("scaffold/js/package.json.tmpl")),
    ("package-lock.json", include_str!("scaffold/js/package-lock.json.tmpl")),
    ("{{name}}.toml", include_str!("scaffold/js/manifest.toml.tmpl")),
    ("Makefile", include_str!("scaffold/js/Makefile.tmpl")),
    ("README.md", include_str!("scaffold/js/README.md.tmpl")),
    (".gitignore", include_str!("scaffold/js/gitignore.tmpl")),
];

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate built with `cargo build --target wasm32-wasip2`.
    Rust,
    /// A Python project built with componentize-py.
    Python,
    /// A JavaScript project built with jco componentize (componentize-js).
    Js,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// Why no scaffold was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0}")]
    BadName(String),
    #[error("{0} already exists and is not empty; pick another --dir or remove it")]
    NotEmpty(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn fill(template: &str, name: &str) -> String {
    template.replace("{{name}}", name).replace("{{crate}}", &name.replace('-', "_"))
}

/// Writes a new plugin called `name` in `lang` into `dir` (created; must be empty if it
/// exists). Returns the files written, relative to `dir`.
///
/// # Errors
/// An invalid plugin name, a non-empty `dir`, or a file that cannot be written.
pub fn create(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    valid_plugin_name(name).map_err(ScaffoldError::BadName)?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let templates = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    let files = templates.iter().map(|(path, text)| (fill(path, name), fill(text, name))).chain([
        ("wit/plugin.wit".to_string(), WIT.to_string()),
        ("fixtures/event.json".to_string(), EVENT.to_string()),
    ]);
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(&rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text.as_bytes())
        };
        write().map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(PathBuf::from(rel));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Manifest;

    #[test]
    fn every_scaffold_has_a_valid_manifest_and_the_contract() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("my-plugin");
            let files = create("my-plugin", lang, &target).unwrap();
            assert!(files.contains(&PathBuf::from("my-plugin.toml")), "{files:?}");
            let manifest = Manifest::load(&target.join("my-plugin.toml")).unwrap();
            assert_eq!(manifest.name, "my-plugin");
            assert_eq!(std::fs::read_to_string(target.join("wit/plugin.wit")).unwrap(), WIT);
            let delivery = std::fs::read(target.join("fixtures/event.json")).unwrap();
            crate::okta::Delivery::parse_delivery_or_event(&delivery).unwrap();
            let all: String = files.iter().map(|f| std::fs::read_to_string(target.join(f)).unwrap()).collect();
            assert!(!all.contains("{{"), "an unfilled placeholder");
        }
        let dir = tempfile::tempdir().unwrap();
        let cargo = std::fs::read_to_string({
            create("my-plugin", Lang::Rust, &dir.path().join("p")).unwrap();
            dir.path().join("p/Cargo.toml")
        })
        .unwrap();
        assert!(cargo.contains("name = \"my-plugin\"") && cargo.contains("[workspace]"), "{cargo}");
    }

    #[test]
    fn the_js_scaffold_pins_its_toolchain_and_builds_without_wasi_http() {
        let dir = tempfile::tempdir().unwrap();
        create("my-plugin", Lang::Js, dir.path()).unwrap();
        let package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("package.json")).unwrap()).unwrap();
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("package-lock.json")).unwrap()).unwrap();
        for (name, version) in package["devDependencies"].as_object().unwrap() {
            let version = version.as_str().unwrap();
            assert!(version.chars().all(|c| c.is_ascii_digit() || c == '.'), "{name} is not pinned exactly: {version}");
            assert_eq!(lock["packages"][format!("node_modules/{name}")]["version"], version, "{name}: lock disagrees");
        }
        assert_eq!(lock["packages"]["node_modules/@bytecodealliance/preview2-shim"]["version"], "0.26.0");
        assert_eq!(lock["name"], "my-plugin");
        let build = package["scripts"]["build"].as_str().unwrap();
        assert!(build.contains("--disable http fetch-event") && build.contains("my-plugin.wasm"), "{build}");
        // The shipped JavaScript plugin is built with the same toolchain (one install for both).
        let shipped: serde_json::Value =
            serde_json::from_str(include_str!("../../plugins/webhook-forward/package.json")).unwrap();
        assert_eq!(shipped["devDependencies"], package["devDependencies"]);
        assert_eq!(shipped["overrides"], package["overrides"]);
    }

    #[test]
    fn refuses_a_bad_name_and_a_non_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(create("Bad Name", Lang::Rust, &dir.path().join("x")), Err(ScaffoldError::BadName(_))));
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        assert!(matches!(create("fine", Lang::Python, dir.path()), Err(ScaffoldError::NotEmpty(_))));
    }
}
