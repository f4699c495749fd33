# hookhost — the two commands a newcomer runs: `make demo` and `make test`.
CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
# Rust plugins shipped as drop-in bundles (dist/plugins/<name>.wasm + .toml).
PLUGINS := graph-guest chat-notify
# Python plugins (componentize-py), shipped the same way; not cargo members.
PY_PLUGINS := siem-forward
# The Python plugin toolchain lives in a project-local venv (never committed).
PY_VENV := target/py-venv
COMPONENTIZE_PY_VERSION := 0.25.1
COMPONENTIZE_PY := $(PY_VENV)/bin/componentize-py
# JavaScript plugins (jco componentize), shipped the same way; built with one toolchain,
# installed by `npm ci` from plugins/webhook-forward's lock into $(JS_TOOLCHAIN) (never
# committed, reused by the JS scaffold's test). Their package.json pins what the JS
# scaffold pins (a unit test in host/src/scaffold.rs holds them equal).
JS_PLUGINS := webhook-forward
JS_TOOLCHAIN := target/js-toolchain
JCO := $(JS_TOOLCHAIN)/node_modules/.bin/jco
# Components used only by the tests.
TEST_PLUGINS := echo hostile wrong-world legacy-v1
BENCH ?= runtime

.PHONY: all build plugins wasm-target py-toolchain js-toolchain dist host test bench demo lint setup-demo setup-test clean

all: build

## The wasm target of the pinned toolchain (rust-toolchain.toml), added when missing: rustup
## does not add it by itself where RUSTUP_AUTO_INSTALL=0.
wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## Every plugin and test plugin as a WASI 0.2 component (release, small).
plugins: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS) $(TEST_PLUGINS))

## componentize-py in $(PY_VENV): the venv is made once, pip runs only while the tool is missing.
py-toolchain: $(COMPONENTIZE_PY)
$(COMPONENTIZE_PY):
	test -x $(PY_VENV)/bin/python || python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)

## A Python plugin's bundle: the component is rebuilt only when its sources or the WIT
## change (componentize-py takes 5-25 s and ~400 MB), the manifest copied when it changes.
define py_plugin
dist/plugins/$(1).wasm: $(wildcard plugins/$(1)/*.py) wit/plugin.wit | $(COMPONENTIZE_PY)
	mkdir -p dist/plugins
	cd plugins/$(1) && $(CURDIR)/$(COMPONENTIZE_PY) --wit-path $(CURDIR)/wit --world plugin componentize app -o $(CURDIR)/dist/plugins/$(1).wasm.tmp
	mv dist/plugins/$(1).wasm.tmp dist/plugins/$(1).wasm
dist/plugins/$(1).toml: plugins/$(1)/$(1).toml
	mkdir -p dist/plugins
	cp plugins/$(1)/$(1).toml dist/plugins/$(1).toml
endef
$(foreach p,$(PY_PLUGINS),$(eval $(call py_plugin,$(p))))

## jco in $(JS_TOOLCHAIN): `npm ci` runs only when the pinned lock changes (~30 s, ~340 MB).
js-toolchain: $(JCO)
$(JCO): plugins/webhook-forward/package.json plugins/webhook-forward/package-lock.json
	mkdir -p $(JS_TOOLCHAIN)
	cp $^ $(JS_TOOLCHAIN)/
	cd $(JS_TOOLCHAIN) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## A JavaScript plugin's bundle: rebuilt when its sources or the WIT change (15-60 s).
## `--disable http fetch-event`: the host grants no wasi:http (see docs/plugins.md).
define js_plugin
dist/plugins/$(1).wasm: $(filter-out %.test.js,$(wildcard plugins/$(1)/*.js)) wit/plugin.wit | $(JCO)
	mkdir -p dist/plugins
	cd plugins/$(1) && $(CURDIR)/$(JCO) componentize app.js --wit $(CURDIR)/wit --world-name plugin \
	  --disable http fetch-event --bundle --out $(CURDIR)/dist/plugins/$(1).wasm.tmp
	mv dist/plugins/$(1).wasm.tmp dist/plugins/$(1).wasm
dist/plugins/$(1).toml: plugins/$(1)/$(1).toml
	mkdir -p dist/plugins
	cp plugins/$(1)/$(1).toml dist/plugins/$(1).toml
endef
$(foreach p,$(JS_PLUGINS),$(eval $(call js_plugin,$(p))))

## Drop-in bundles for the shipped plugins.
dist: plugins $(foreach p,$(PY_PLUGINS) $(JS_PLUGINS),dist/plugins/$(p).wasm dist/plugins/$(p).toml)
	mkdir -p dist/plugins
	for p in $(PLUGINS); do \
	  cp target/$(WASM_TARGET)/release/$$(echo $$p | tr - _).wasm dist/plugins/$$p.wasm && \
	  cp plugins/$$p/$$p.toml dist/plugins/$$p.toml; \
	done

## The host binary and the Graph emulator.
host:
	$(CARGO) build --release -p hookhost -p hookhost-tests --bins

## target/release/hookhost and dist/plugins/*.wasm|.toml.
build: host dist

## One cargo invocation builds the host, the emulator and every test with one feature set
## (a separate `cargo build` first would compile wasmtime twice).
## The PostgreSQL store tests use HOOKHOST_TEST_PG_URL, or start a throwaway loopback server
## with scripts/test-postgres (needs Debian's postgresql package; .ci/run installs it).
## What a fresh machine lacks for each of the two commands (scripts/setup says what it does).
setup-demo:
	scripts/setup demo
setup-test:
	scripts/setup test

test: setup-test
	$(MAKE) dist
	cd plugins/siem-forward && python3 -B -m unittest -q
	cd plugins/webhook-forward && node --test
	HOOKHOST_TEST_PG_URL="$${HOOKHOST_TEST_PG_URL:-$$(scripts/test-postgres)}" && export HOOKHOST_TEST_PG_URL && \
	  $(CARGO) test --workspace --release

## make bench BENCH=runtime|graph|ingest|reload|languages|scaleout|backfill|burst|reconcile — last line of output is one JSON object.
bench: host dist
	HOOKHOST_TEST_PG_URL="$${HOOKHOST_TEST_PG_URL:-$$( [ "$(BENCH)" != scaleout ] || scripts/test-postgres)}" && export HOOKHOST_TEST_PG_URL && \
	  RUST_BACKTRACE=0 $(CARGO) bench -p hookhost-tests --bench $(BENCH)

## The main job end to end on the embedded defaults (KEEP=1 leaves it running).
demo: setup-demo
	$(MAKE) build
	./target/release/hookhost-demo

## Formatting and lints exactly as CI checks them (lint rules: [workspace.lints] in Cargo.toml).
lint: wasm-target
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

clean:
	rm -rf dist demo

## Fuzz the parsers of outside input (Okta envelope, host config, plugin manifest) for
## FUZZ_SECS seconds each with cargo-fuzz on nightly (installed if missing). Not in CI.
## Safe Rust, so no sanitizer: it hunts panics, stack overflows, hangs and blow-ups.
FUZZ_SECS ?= 30
FUZZ_TARGETS := okta_delivery host_config manifest
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd host && for t in $(FUZZ_TARGETS); do \
	  $(CARGO) +nightly fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECS) -rss_limit_mb=2048 || exit 1; \
	done
