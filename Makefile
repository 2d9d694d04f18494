# Quickstart: `make run` (the default federated fine-tuning simulation), `make test` (the suite).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pollen-setup

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

run: setup
	$(BIN)/pollen simulate

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/seed_replay.py --quick
	$(BIN)/python bench/aggregation_cost.py --quick

clean:
	rm -rf runs .pytest_cache
