# The two commands a new user runs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/snapahead

.PHONY: all build install deps demo test test-unit stress fuzz bench bench-quick garage-start garage-stop clippy fmt clean

all: build

build:
	$(CARGO) build --release

# snapahead on PATH, and the mount(8) helper where mount looks for it, so
# `mount -t fuse.snapahead` and fstab lines work (README, "fstab").
PREFIX ?= /usr/local
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/snapahead
	install -D -m 0755 target/release/mount-fuse-snapahead $(DESTDIR)/sbin/mount.fuse.snapahead

# System packages the demo and tests use (installed only when missing).
deps:
	scripts/deps.sh

# Build, make an ext4 demo volume, snapshot it into the embedded file://
# store, show list / inspect / verify, clean up.
demo: deps build
	scripts/demo.sh

# Unit and integration tests, including the s3:// path against a local
# Garage server (installed on first use, started, and stopped afterwards).
test: deps
	$(CARGO) build --all-targets
	scripts/garage.sh start
	set -a; source <(scripts/garage.sh env); set +a; \
	  $(CARGO) test --all-targets 2>&1 | tee target/test.log; status=$${PIPESTATUS[0]}; \
	  scripts/garage.sh stop; exit $$status

test-unit:
	$(CARGO) test --lib

# The long fault tests: 16 mixed readers for 60 s (tests/stress.rs; `make
# test` runs the same test for a few seconds), and the store outage test.
stress: deps
	$(CARGO) build --all-targets
	scripts/garage.sh start
	set -a; source <(scripts/garage.sh env); set +a; \
	  SNAPAHEAD_STRESS_SECS=$${SNAPAHEAD_STRESS_SECS:-60} $(CARGO) test --test stress --test outage -- --nocapture 2>&1 \
	    | tee target/stress.log; status=$${PIPESTATUS[0]}; \
	  scripts/garage.sh stop; exit $$status

# Coverage-guided fuzzing of the decoders (index, page, trace, config) with
# cargo-fuzz: needs the nightly toolchain; FUZZ_SECS per target (default 60).
# A crash is saved under fuzz/artifacts/; copy it to fuzz/regressions/TARGET/
# and tests/decoders_fuzz.rs replays it on every `make test`.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -o pipefail; mkdir -p target; for t in index page trace config; do \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$${FUZZ_SECS:-60} -print_final_stats=1 2>&1 \
	    | tee target/fuzz-$$t.log | { grep -E 'number_of_executed_units|Done|crash|panicked' || true; } || exit 1; \
	done

# Benchmarks; results go to docs/benchmarks.md.
bench: deps build
	bench/run.sh

bench-quick: deps build
	bench/run.sh --quick

garage-start:
	scripts/garage.sh start
garage-stop:
	scripts/garage.sh stop

clippy:
	$(CARGO) clippy --all-targets -- -D warnings
fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf .snapahead demo
