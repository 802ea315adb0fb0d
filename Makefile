# The README's commands. Everything is installed into .venv; the broker's jars into ~/.cache.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install check-tools clean alerts-check failover-long

demo: $(STAMP)
	$(BIN)/medstream demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check streams tests bench examples
	$(BIN)/ruff format --check streams tests bench examples
	$(BIN)/mypy streams examples
	$(BIN)/medstream schemas check

install: $(STAMP)

# The failover tests of a three-node cluster with more patients and a longer load (README).
failover-long: $(STAMP)
	MEDSTREAM_FAILOVER_LONG=1 $(BIN)/pytest tests/integration/test_failover.py

# The Prometheus alert rules and their unit tests (promtool: Debian's `prometheus` package).
PROMTOOL ?= promtool
alerts-check:
	$(PROMTOOL) check rules deploy/prometheus/medstream-alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/medstream-alerts.test.yml

$(STAMP): pyproject.toml | check-tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

check-tools:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is needed")'
	@command -v java >/dev/null || { echo "Java 17+ is needed to run Kafka" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch Kafka's jars" >&2; exit 1; }

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Renders deploy/kubernetes with kustomize and validates it with kubeconform -strict, offline
# (tools and schemas installed into ~/.cache/medstream when missing): deploy/kubernetes/README.md.
.PHONY: k8s-check
k8s-check: $(STAMP)
	bash deploy/kubernetes/tools/check.sh
