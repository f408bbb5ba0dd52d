# fleetlog: `make run` starts a single-node server on 127.0.0.1:7070 (data in ./fleetlog-data);
# `make test` runs every test. Both install missing build prerequisites first (`make test` also
# chromium and chromium-driver, for the browser tests).
#
# The target directory lives outside the clone so RocksDB (10-20 minutes to compile) is built once
# per machine, not once per checkout.
CARGO_TARGET_DIR ?= $(HOME)/.cache/fleetlog-target
export CARGO_TARGET_DIR

.PHONY: run test cluster demo demo-agents prerequisites build release install lint fuzz-check bench-dashboard sim openapi

prerequisites:
	@./scripts/prerequisites.sh

# Builds every target, as `make test` does: the same feature set, so RocksDB is compiled once for both.
build: prerequisites
	cargo build --workspace --all-targets

# The optimised binary speed figures are taken on: $(CARGO_TARGET_DIR)/release/fleetlog. The first
# release build compiles RocksDB again, optimised (14 minutes here with the debug build's other
# dependencies already cached; longer from a cold cache).
release: prerequisites
	cargo build --release -p fleetlog --bin fleetlog

# Installs the release build under PREFIX (default /usr/local): the binary, shell completions,
# systemd units for a server and an agent, the agent's system user, and example settings in
# /etc/fleetlog (kept if already there). DESTDIR stages the files elsewhere, for packaging.
# docs/configuration.md describes the settings and the units.
install: release
	./scripts/install.sh $(CARGO_TARGET_DIR)/release/fleetlog

# The operator's page in headless chromium against the release server with 10,000 hosts: its
# weight, its first full render and the time from an appended report to the screen
# (docs/performance.md). The bench program itself is built on the dev profile, as the Criterion
# benches are run: the bench profile would compile RocksDB once more, and what is measured is the
# release server and the browser, not the bench.
bench-dashboard: release
	@./scripts/prerequisites.sh --tests
	cargo bench --profile dev --bench dashboard

run: build
	$(CARGO_TARGET_DIR)/debug/fleetlog serve

# The deterministic cluster simulation (docs/simulation.md): SEEDS seeds from FIRST on, DURATION
# simulated seconds of faults and traffic each, one seed per core at a time. It prints every
# failing seed with its first broken invariant and the one command that replays it; SEED=n
# replays one seed and prints its trace; BUG=ack-before-sync puts a known bug back;
# CLIENTS_ONLY=1 leaves out agents and policies (the workload the regression seeds were found
# with). Built on its own profile (optimised, without RocksDB: about five minutes from a cold
# cache).
SEEDS ?= 1000
FIRST ?= 0
DURATION ?= 300
sim: prerequisites
	cargo build --profile sim -p fleetlog-sim
	$(CARGO_TARGET_DIR)/sim/fleetlog-sim $(if $(SEED),--seed $(SEED) --trace,--seeds $(SEEDS) --first $(FIRST)) --seconds $(DURATION) $(if $(BUG),--bug $(BUG)) $(if $(CLIENTS_ONLY),--clients-only)

# A local 3-node cluster on 127.0.0.1:7071-7073 (data in ./fleetlog-dev), until Ctrl-C.
cluster: build
	$(CARGO_TARGET_DIR)/debug/fleetlog dev --nodes 3

# The hands-off demo: 3 nodes, 20 agents, a policy, one `deploy start`, then the policy alone: waves
# advance by themselves, an alert (posted with curl, standing in for Alertmanager) rolls back (README).
demo: build
	./scripts/demo-hands-off.sh

# The agents demo: 3 nodes, 50 agents, a deployment in 3 waves by hand, a rollback by hand (README).
demo-agents: build
	./scripts/demo-agents.sh

# The tests need a browser besides the build's tools (the browser tests drive chromium over
# WebDriver): the script is called with --tests here rather than through `prerequisites`, which
# `run` and `build` share and which must not install one.
test:
	@./scripts/prerequisites.sh --tests
	cargo test --workspace --all-targets

lint: prerequisites
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Rewrites docs/openapi.json from the API's types and endpoint descriptions (api/src/openapi/): a
# test fails while the committed copy differs from what the server serves.
openapi:
	FLEETLOG_WRITE_OPENAPI=1 cargo test -p fleetlog-api --lib openapi::tests::the_committed_document_is_the_generated_one

# The fuzz targets compile (on the stable toolchain; running them needs nightly: scripts/fuzz.sh).
fuzz-check: prerequisites
	cargo check --manifest-path fuzz/Cargo.toml --bins
