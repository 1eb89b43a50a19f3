# alarmd developer targets.  `make run` = the demo; `make test` = everything CI checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps peers run demo test test-kafka4 unit chaos chaos-scaleout lint type bench install clean

PREFIX ?= /opt/alarmd
CONFDIR ?= /etc/alarmd

setup: system-deps $(STAMP) peers

system-deps:
	@bash tools/system-deps.sh

$(STAMP): pyproject.toml setup.py src/alarmd/collector/_bermodule.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . --group dev
	@touch $(STAMP)

# The real peers: Apache Kafka from Maven Central, snmpsim in its own venv (both cached).
peers: $(STAMP)
	$(BIN)/python tools/kafka_local.py resolve
	$(BIN)/python tools/simnet.py setup

run demo: setup
	$(BIN)/python tools/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench
	$(BIN)/lint-imports

type: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

test: setup lint type
	$(BIN)/pytest -v

# Kafka 4.x: the Kafka-facing tests (transactions, consumer groups, compacted topics, admin calls,
# SASL/TLS, distributed mode) against a local Kafka $(KAFKA4_VERSION) instead of 3.9.1; about 11 minutes on
# a 2-core machine, not part of `make test` (docs/kafka-versions.md).
KAFKA4_VERSION ?= 4.4.0
KAFKA4_TESTS ?= tests/dispatch/test_kafka_protocol.py tests/test_kafka_cluster.py \
	tests/dispatch/test_kafka_source.py tests/dispatch/test_kafka_security.py \
	tests/dispatch/test_follow_compacted.py tests/dispatch/test_broker_outage.py \
	tests/test_scaleout_txn.py tests/test_scaleout_restore.py tests/test_scaleout_elements.py \
	tests/test_scaleout_view.py tests/test_scaleout.py tests/test_lifecycle_e2e.py \
	tests/test_scaleout_open_txn.py tests/test_scaleout_restore_wait.py tests/test_scaleout_rulestate.py \
	tests/test_scaleout_share.py tests/dispatch/test_read_recent.py tests/chaos/test_scaleout_chaos.py
test-kafka4: $(STAMP)
	ALARMD_KAFKA_VERSION=$(KAFKA4_VERSION) $(BIN)/python tools/kafka_local.py resolve
	ALARMD_KAFKA_VERSION=$(KAFKA4_VERSION) $(BIN)/pytest -v $(KAFKA4_TESTS)

# Fault injection (broker and daemon kills, a trap flood, bad agents, a full disk) with its summary table.
chaos: setup
	$(BIN)/pytest -v -m chaos

# Distributed mode under faults: 3 brokers, 3 machines of collectors and correlators, 10k interfaces,
# 1k traps/s to two receivers each; every phase against a run without faults (16-28 minutes on a 2-core machine).
# Table on stdout, figures in tests/artifacts/scaleout-summary.json (docs/scaleout-chaos.md).
# `make chaos-scaleout CHAOS_ARGS="--phases reference,kill --kills 5"` for a part of it.
chaos-scaleout: setup
	$(BIN)/python -m tests.chaos.scaleout $(CHAOS_ARGS)

# Benchmarks, each against its peer in the same run, 127.0.0.1 only, about 18 minutes: results in bench/results/{latest,<workload>}.json.
# `make bench BENCH_ARGS=--quick` for a short smoke run.
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Install as a systemd service (root): a venv in $(PREFIX), config in $(CONFDIR), user alarmd.
install:
	id -u alarmd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/alarmd --shell /usr/sbin/nologin alarmd
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q .
	install -d -m 0750 -g alarmd $(CONFDIR)
	[ -e $(CONFDIR)/alarmd.yml ] || cp -r config/* $(CONFDIR)/
	[ -e $(CONFDIR)/rules ] || cp -r rules $(CONFDIR)/rules
	sed -i 's|../rules/\*.yml|rules/*.yml|' $(CONFDIR)/alarmd.yml
	sed 's|/opt/alarmd|$(PREFIX)|g; s|/etc/alarmd|$(CONFDIR)|g' deploy/alarmd.service > /etc/systemd/system/alarmd.service
	systemctl daemon-reload
	@echo "edit $(CONFDIR)/alarmd.yml, then: systemctl enable --now alarmd"

clean:
	rm -rf $(VENV) .state .run .mypy_cache .ruff_cache .pytest_cache
