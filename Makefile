# xvs — build, test, demo. Every target installs what it needs (idempotently).
SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build and the tests use: clang/llvm/libbpf-dev build the XDP
# programs, iproute2/ethtool/nftables/curl drive the namespace tests, conntrack
# empties nftables' connection table between the bench's SYN-flood rounds.
APT_PKGS := clang llvm libbpf-dev linux-libc-dev iproute2 ethtool curl nftables iputils-ping conntrack
# The Debian package and its tests: dpkg-deb/dpkg-shlibdeps build it, strip
# trims the binaries, man-db renders and indexes the pages, systemd-analyze
# verifies the unit, setpriv starts xvsd with the unit's capabilities and
# strace stalls one of its workers (the watchdog test).
APT_PKGS += dpkg-dev binutils man-db groff-base systemd util-linux xz-utils strace
# The ECMP lab and its tests: BIRD 2 speaks BGP and BFD between the lab's
# router and directors (bird, birdc).
APT_PKGS += bird2

.PHONY: all deps bench-deps build test fmt-check clippy unit demo bench bench-readme clean fuzz loom soak flood deb sched-fixtures

all: build

# Installs the Debian packages of $(1) that are missing (apt-get update first).
define install_pkgs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_pkgs,$(APT_PKGS))

# The bench also compares with HAProxy (mode tcp); installed here, not by the
# bench at run time. Debian's package may start a haproxy service: it listens
# on nothing of the bench's (the bench runs its own in a namespace).
BENCH_PKGS := haproxy
bench-deps: deps
	$(call install_pkgs,$(BENCH_PKGS))

build: deps
	$(CARGO) build --workspace --release

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The end-to-end tests run the built binaries (xvsd, xvsadm, xvs-lab).
unit: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The README's test command: formatting, lints, then every test.
test: deps fmt-check clippy sched-fixtures unit

clean:
	$(CARGO) clean

# Model checks of the connection table's concurrency protocol with loom (every
# interleaving within a preemption bound, on a table of a few entries). Its own
# target dir: `--cfg loom` rebuilds every crate. LOOM_MAX_PREEMPTIONS to deepen.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
	CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	$(CARGO) test -p xvs-core --release --lib conn::table::loom_tests

# The scheduler fixtures (crates/xvs-core/tests/fixtures/sched) re-derived by the
# kernel's sh/dh/mh code compiled in user space; fails if one differs from the
# committed file. The script's --write replaces them.
sched-fixtures:
	crates/xvs-core/tests/fixtures/sched/harness/regen.sh

# The README's demo command: NAT lab on veths, 10 HTTP requests through the VIP,
# the listings, teardown (scripts/demo.sh says each step as it goes).
demo: deps
	$(CARGO) build --release -p xvsd -p xvsadm -p xvs-lab
	$(SUDO) BIN=target/release scripts/demo.sh

# xvs against its ceiling (xvsd's I/O path, pass-through engine), the kernel
# (ip_forward, nftables DNAT) and HAProxy, in one run: no-drop rates, cycles
# per packet at a fixed load, TCP conns/s and bulk, conns/s under a SYN flood;
# 6 interleaved rounds, about 28 minutes. Results in bench/results/. Run it on
# a quiet machine; BENCH_ARGS to adjust (e.g. BENCH_ARGS="--runs 3 --secs 1"
# for a quick look, BENCH_ARGS="--only xvs-nat,nft-dnat,flood" for the SYN
# flood figure alone).
BENCH_ARGS ?=
bench: bench-deps
	$(CARGO) build --release -p xvs-bench -p xvsd
	$(SUDO) target/release/xvs-bench run $(BENCH_ARGS)

# The README's performance section from a run's JSON (the newest in
# bench/results unless BENCH_JSON is given).
BENCH_JSON ?=
bench-readme:
	$(CARGO) build --release -p xvs-bench
	target/release/xvs-bench readme --write README.md $(if $(BENCH_JSON),--json $(BENCH_JSON))

# xvsd in the NAT lab under mixed traffic for SOAK_SECS (default 10 minutes):
# new TCP conns at a steady rate, long-lived ones, UDP, a 30 s SYN flood every
# other minute, a rule change every second, a SIGHUP every 30 s; then the
# table must drain to nothing. Then the SYN flood tests' 30 s version.
# Report (text, JSON, SVG plots of conns and RSS) and flood figures in SOAK_OUT.
SOAK_SECS ?= 600
SOAK_OUT ?= $(CURDIR)/target/soak
FLOOD_SECS ?= 30
soak: deps
	$(CARGO) build --workspace --bins
	mkdir -p $(SOAK_OUT)
	SOAK_SECS=$(SOAK_SECS) SOAK_OUT=$(SOAK_OUT) $(CARGO) test -p xvs-e2e --test soak -- --ignored --nocapture
	$(MAKE) flood

# The SYN flood tests at FLOOD_SECS (30 s; `make test` runs them for 3 s):
# figures appended to SOAK_OUT/flood.jsonl.
flood: deps
	$(CARGO) build --workspace --bins
	mkdir -p $(SOAK_OUT)
	XVS_FLOOD_SECS=$(FLOOD_SECS) XVS_FLOOD_REPORT=$(SOAK_OUT)/flood.jsonl $(CARGO) test -p xvs-e2e --test flood -- --nocapture

# Coverage-guided fuzzing (cargo-fuzz; stable toolchain with RUSTC_BOOTSTRAP for
# the sanitizer flags) of the whole per-packet path and of the sync decoder (a
# backup's received datagrams). FUZZ_SECS=60 each by default.
FUZZ_SECS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd crates/xvs-core && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run engine -- -max_total_time=$(FUZZ_SECS) -max_len=2048
	cd crates/xvs-sync && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode -- -max_total_time=$(FUZZ_SECS) -max_len=4096

# The Debian package (xvs_VERSION_ARCH.deb in target/deb/) from a release
# build: binaries, unit, conffile, man pages and completions (generated from
# the binaries), docs, the ipvsadm alternative. `make test` builds the same
# package from the debug binaries and installs, checks and purges it
# (tests/tests/package.rs).
deb: deps
	$(CARGO) build --release -p xvsd -p xvsadm -p xvs-lab -p xvs-bench -p xvs-docgen
	scripts/mkdeb.sh target/release target/deb
