# Tutela: `make run` serves the demo, `make test` runs every check. Both set themselves up.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(PY) -m uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test lint typecheck migrations-check browser bench bench-quick clean

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install --quiet --disable-pip-version-check uv
	$(UV) venv --quiet --allow-existing --python $(PY) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/tutela db upgrade
	$(BIN)/tutela demo --if-empty --households 25
	$(BIN)/tutela serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy --strict src

migrations-check: install
	@scratch=$$(mktemp -d) && \
	TUTELA_HOME=$$scratch $(BIN)/tutela db upgrade >/dev/null && \
	TUTELA_HOME=$$scratch $(BIN)/alembic -n main check && \
	TUTELA_HOME=$$scratch $(BIN)/alembic -n keys check; \
	status=$$?; rm -rf $$scratch; exit $$status

# The console's tests drive Debian's Chromium; install it when it is missing and we can.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: browser tests will be skipped"; fi; }

test: install browser lint typecheck migrations-check
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/vault.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/stuffing.py
	$(BIN)/python bench/admission.py
	$(BIN)/python bench/door.py
	$(BIN)/python bench/erasure.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/epochs.py
	$(BIN)/python bench/customers.py
	$(BIN)/python bench/customers.py --scale-out
	$(BIN)/python bench/rawscan.py
	$(BIN)/python bench/recovery_abuse.py
	$(BIN)/python bench/recovery_abuse.py --store postgresql
	$(BIN)/python bench/consent.py
	$(BIN)/python bench/consent.py --store sqlite

bench-quick: install
	$(BIN)/python bench/vault.py --quick
	$(BIN)/python bench/ingest.py --quick
	$(BIN)/python bench/stuffing.py --quick
	$(BIN)/python bench/admission.py --quick
	$(BIN)/python bench/door.py --quick
	$(BIN)/python bench/erasure.py --quick
	$(BIN)/python bench/export.py --quick
	$(BIN)/python bench/retention.py --quick
	$(BIN)/python bench/epochs.py --quick
	$(BIN)/python bench/customers.py --quick
	$(BIN)/python bench/customers.py --quick --scale-out
	$(BIN)/python bench/rawscan.py --quick
	$(BIN)/python bench/recovery_abuse.py --quick
	$(BIN)/python bench/consent.py --quick

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
