# Agenda: every entry point a person or CI uses. Each target does its own
# set-up: it builds what it runs and, when run as root, installs the Debian
# packages it needs (otherwise it says which ones to install).

CARGO ?= cargo
SUDO_APT = DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: web deps-web run stop run-local chaos docker-test manifests test lint unit system bench bench-api bench-load bench-nginx soak bench-reads bench-growth bench-caldav bench-notify bench-db bench-failover bench-vip build release deps-run deps-test deps-bench deps-bench-failover deps-bench-vip clean

## make run: start the whole system in the foreground (Ctrl-C or `make stop` stops it).
## As root: two machines (network namespaces) behind a virtual IP (deploy/netns.sh).
## Otherwise: says so and runs the loopback mode (make run-local).
run: release web deps-run
	@if [ "$$(id -u)" = 0 ]; then \
	  AGENDA_BIN_DIR=$(CURDIR)/target/release deploy/netns.sh run; \
	else \
	  echo "make run: not root, so no network namespaces: starting the loopback mode (make run-local)."; \
	  echo "          As root, make run starts the two-machine topology behind a virtual IP."; \
	  AGENDA_BIN_DIR=$(CURDIR)/target/release deploy/run-local.sh; \
	fi

## make stop: stop what make run (or make run-local) started, from another shell.
stop:
	@if [ -f .agenda/netns.env ] && [ "$$(id -u)" = 0 ]; then deploy/netns.sh stop; fi
	@if [ -s .agenda/run-local.pid ]; then kill -TERM "$$(cat .agenda/run-local.pid)" 2>/dev/null || true; fi

## make run-local: the same system on loopback only, no root needed.
run-local: release web deps-run
	AGENDA_BIN_DIR=$(CURDIR)/target/release deploy/run-local.sh

## make test: format and lint checks, the deployment files, unit tests, system
## tests (real processes; as root also the two-machine topology in namespaces:
## VIP failover and a bounded chaos plan).
test: deps-test lint manifests build web
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p agenda-tests --tests -- --test-threads=1

## make sim: agenda-db's raft loop simulated in one thread, by seed: SEEDS=N
## runs seeds 1..N (default 1000) and prints seeds per second; SEED=S replays
## one and ends with its trace digest; SIM_ARGS adds flags (--trace,
## --bug ack-before-fsync, --secs, see target/release/sim --help).
SEEDS ?= 1000
.PHONY: sim
sim:
	$(CARGO) build --release -p agenda-tests --bin sim
	@if [ -n "$(SEED)" ]; then target/release/sim --seed "$(SEED)" $(SIM_ARGS); \
	else target/release/sim --seeds "$(SEEDS)" $(SIM_ARGS); fi

## make fuzz: the parsers we own under AFL++ (cargo-afl on the stable toolchain,
## installed from crates.io when missing): recurrence rules and time fields,
## request bodies, agenda-db REST bodies, raft envelopes, VIP adverts;
## FUZZ_SECS seconds per target (default 60), FUZZ_TARGETS to choose. make test
## runs the same targets bounded, as ordinary tests (docs/FUZZING.md).
.PHONY: fuzz
fuzz:
	CARGO="$(CARGO)" fuzz/run.sh

## make manifests: docker-compose files and Kubernetes manifests validated offline.
manifests:
	deploy/check-manifests.sh

## make chaos: faults under traffic in the two-machine topology (root), every
## fault alone and in pairs, history checks, a table of unavailability per fault.
chaos: release deps-run
	target/release/chaos run --plan full

## make docker-test: the compose deployment in three real dockerds inside
## namespaces, the agenda story through the VIP, machine A killed, the story again
## (root; outside CI; feeds the images the host-built release binaries).
docker-test: release
	deploy/docker/docker-test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --workspace

## make bench-db: agenda-db vs a real etcd, same workload, one run, a table.
bench-db: release deps-bench
	target/release/bench_db

## make bench-api: the public API through the gateway at 1,000 clients, a table per route.
bench-api: release
	target/release/bench_api

## make bench-load: seed 003's load test (phases low, medium, high, stress; open model, think
## times), a table per phase as the seed's. BENCH_LOAD_ARGS adds flags, e.g. --rate-scale 10,
## --phase low, --endpoints .agenda/endpoints.json (a running make run), --json FILE;
## target/release/agenda-bench --help explains them.
bench-load: release
	target/release/agenda-bench $(BENCH_LOAD_ARGS)

## make bench-nginx: the physical limit (issue 17): Debian's nginx serving a file with the bytes of
## a week view, through the same TLS, against the week view itself; one closed loop (64
## connections), alternating rounds, requests/s, latency, the ratio agenda/nginx. A system of its
## own; BENCH_NGINX_ARGS adds flags (--round-secs, --rounds, --connections, --endpoints, --json).
bench-nginx: release
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null || { \
	  echo "make bench-nginx needs nginx: sudo apt-get install -y nginx-light"; exit 1; }
	target/release/agenda-bench --vs-nginx $(BENCH_NGINX_ARGS)

## make soak: an hour at a constant rate of VUs (half the saturation rate; not in CI), a row a
## minute (latency, errors, the memory of every process), first and last ten minutes compared.
## Against a running make run when .agenda/endpoints.json exists, else a system of its own.
## SOAK_ARGS adds flags, e.g. --rate 12 --minutes 60 --json soak.json.
soak: release
	@if [ -f .agenda/endpoints.json ]; then \
	  echo "target/release/agenda-bench --soak --endpoints .agenda/endpoints.json $(SOAK_ARGS)"; \
	  target/release/agenda-bench --soak --endpoints .agenda/endpoints.json $(SOAK_ARGS); \
	else \
	  echo "target/release/agenda-bench --soak $(SOAK_ARGS)"; \
	  target/release/agenda-bench --soak $(SOAK_ARGS); \
	fi

## make bench-reads: linearizable reads/s of agenda-db and of the week view with
## 1, 3 and 5 nodes serving reads, each node held to a CPU share by a cgroup (root).
bench-reads: release
	target/release/bench-reads $(BENCH_READS_ARGS)

## make bench-growth: how cost grows with data (issue 17): one system grown in steps to a person
## with 100,000 events over ten years, a group of 1,000 and 1,000,000 people (bulk-loaded through the
## calendar store); p50/p95/p99 of the week view, group agenda and event creation, agenda-db's memory
## per person, state-file writes, a node's restart and a new member's catch-up; tables (docs/GROWTH.md).
## It first checks the last step fits the machine's disk and memory. BENCH_GROWTH_ARGS adds flags,
## e.g. --quick, --scales 100/100/10,100000/10000/100, --tmp-dir /dev/shm/growth, --json growth.json.
bench-growth: release
	target/release/bench-growth $(BENCH_GROWTH_ARGS)

## make bench-caldav: a CalDAV client's sync of a 10,000-event calendar after its first sync, percentiles.
bench-caldav: release
	target/release/bench_caldav

## make bench-failover: Redis primary kills, agenda-supervisor against Redis Sentinel, one run, a table.
bench-failover: release deps-bench-failover
	target/release/bench_failover

## make bench-vip: the VIP, agenda-vip against Debian's keepalived in the same namespaces (root):
## twenty gateway kills each (kill to first request served), then the A-B link cut for 10 s
## (how many holders), one run, a table. Not part of make bench (root only).
bench-vip: deps-bench-vip release deps-run
	target/release/bench_vip

## make bench-notify: live notifications at 1,000 WebSockets: deliveries/s and write-to-push delay.
bench-notify: release deps-test
	target/release/bench_notify

## make bench: every benchmark: the API, live notifications, Redis failover against Sentinel, agenda-db against etcd.
bench: bench-api bench-notify bench-failover bench-db

deps-run:
	@{ command -v curl && command -v redis-server && command -v redis-cli; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq curl redis-server; \
	  else echo "make run needs curl and redis-server: sudo apt-get install -y curl redis-server"; exit 1; fi; }
	@if [ "$$(id -u)" = 0 ]; then { command -v ip && command -v arping; } >/dev/null || { \
	  $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq iproute2 iputils-arping; }; fi
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq --no-install-recommends prometheus; \
	  else echo "note: Prometheus is not installed, so make run starts without it (sudo apt-get install -y prometheus)"; fi; }

## make web: the web app (web/: npm ci, then esbuild into web/dist), which
## the gateway serves at /. Needs node and npm (Debian's).
web: deps-web
	cd web && { [ node_modules/.package-lock.json -nt package-lock.json ] || \
	  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; } && npm run build

deps-web:
	@{ command -v node && command -v npm; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq nodejs npm; \
	  else echo "make web needs node and npm: sudo apt-get install -y nodejs npm"; exit 1; fi; }

deps-test:
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq chromium; \
	  else echo "make test needs Debian's chromium (the web app's browser test): sudo apt-get install -y chromium"; exit 1; fi; }
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq redis-server; \
	  else echo "make test needs redis-server: sudo apt-get install -y redis-server"; exit 1; fi; }
	@if [ "$$(id -u)" = 0 ]; then { command -v ip && command -v arping && command -v curl; } >/dev/null || { \
	  $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq iproute2 iputils-arping curl; }; fi
	@{ command -v prometheus && command -v promtool; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq --no-install-recommends prometheus; \
	  else echo "make test needs Prometheus and promtool (the alert rules and the SLO report): sudo apt-get install -y prometheus"; exit 1; fi; }

deps-bench:
	@command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq etcd-server; \
	  else echo "make bench-db needs etcd: sudo apt-get install -y etcd-server"; exit 1; fi; }

deps-bench-failover:
	@command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || { \
	  if [ "$$(id -u)" = 0 ]; then $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq redis-server; \
	  else echo "make bench-failover needs redis-server: sudo apt-get install -y redis-server"; exit 1; fi; }

deps-bench-vip:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make bench-vip needs root: it builds network namespaces (two machines, a witness, a client)"; \
	  echo "and moves a virtual IP between them. Run it as root: sudo make bench-vip"; exit 1; fi
	@command -v keepalived >/dev/null || [ -x /usr/sbin/keepalived ] || { \
	  $(SUDO_APT) update -qq && $(SUDO_APT) install -y -qq keepalived; }

clean:
	$(CARGO) clean
	rm -rf .agenda
