# hookhost — the two commands a newcomer runs: `make demo` and `make test`.
CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
# Plugins shipped as drop-in bundles (dist/plugins/<name>.wasm + .toml).
PLUGINS := graph-guest
# Components used only by the tests.
TEST_PLUGINS := echo hostile wrong-world
BENCH ?= runtime

.PHONY: all build plugins dist host test bench demo clean

all: build

## Every plugin and test plugin as a WASI 0.2 component (release, small).
plugins:
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS) $(TEST_PLUGINS))

## Drop-in bundles for the shipped plugins.
dist: plugins
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
test: dist
	$(CARGO) test --workspace --release

## make bench BENCH=runtime|graph|ingest|reload — last line of output is one JSON object.
bench: host dist
	RUST_BACKTRACE=0 $(CARGO) bench -p hookhost-tests --bench $(BENCH)

## The main job end to end on the embedded defaults (KEEP=1 leaves it running).
demo: build
	./target/release/hookhost-demo

clean:
	rm -rf dist demo
