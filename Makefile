# dbops.migrations: developer entry points.
#   make demo   set everything up and deploy the example app on http://127.0.0.1:8080
#   make test   the suite CI runs (unit, integration, Docker, molecule, lint; long stories sampled)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=
# Test modules run side by side, one module per worker at a time (each stack has its own
# project name, ports and image repository); TEST_WORKERS=1 runs them one after another. Modules
# start in the order tests/conftest.py gives (longest first), not xdist's (most tests first).
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: help bootstrap images images-pg-matrix test-pg-matrix test-pg-matrix-ci test-pg-matrix-sample demo demo-down test test-all test-unit test-integration test-interrupt test-nightly test-exclusive lint build clean bench-lint bench-gate bench-backup bench-restore-cpu bench-downtime bench-deploy

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

bootstrap: ## Debian packages, Docker engine, compose v2, .venv, local images (idempotent)
	scripts/bootstrap

images: ## (re)build the local images when their inputs changed
	PYTHON=$(CURDIR)/$(PY) scripts/build-images

# PostgreSQL majors besides the host's 15 that the database-facing tests also run against, each in a
# container of dbops/postgres:MAJOR, and those tests.
PG_MATRIX ?= 13 17
PG_MATRIX_TESTS ?= tests/integration/test_postgres_fixture.py tests/integration/test_migration_risk*.py \
	tests/integration/test_pg_backup*.py tests/integration/test_alembic_migrate.py \
	tests/integration/test_alembic_migrate_safety.py

# What CI runs on each version: PG_MATRIX_TESTS without the two whose answers do not depend on the
# server's version (revisions rendered in the release image; the migration_check.yml playbook, whose
# live facts test_migration_risk_dbfacts.py covers), about two minutes less per version.
PG_MATRIX_CI ?= $(filter-out tests/integration/test_migration_risk_render.py tests/integration/test_migration_risk_playbook.py,$(wildcard $(PG_MATRIX_TESTS)))

# Each version-dependent path once, about a minute per version (a quick check).
PG_MATRIX_SAMPLE ?= tests/integration/test_postgres_fixture.py::test_private_cluster_answers \
	tests/integration/test_migration_risk.py::test_detach_partition_concurrently_is_judged_by_the_live_server \
	tests/integration/test_migration_risk_dbfacts.py tests/integration/test_migration_risk_trace.py \
	tests/integration/test_pg_backup_versions.py \
	tests/integration/test_pg_backup_restore.py::test_force_restore_keeps_owner_grants_settings_and_comment \
	tests/integration/test_alembic_migrate.py::test_lock_queue_naive_stalls_writers_ours_gives_up_then_succeeds

images-pg-matrix: ## (re)build dbops/postgres:13 and :17 (Debian bullseye and trixie) when their inputs changed
	PG_VERSIONS="$(PG_MATRIX)" scripts/build-images

demo: bootstrap ## deploy the example app through playbooks/deploy.yml on http://127.0.0.1:8080
	scripts/demo

demo-down: ## stop the demo and remove its volumes
	scripts/demo down

test: bootstrap ## the suite CI runs: unit, integration, Docker, reliability, molecule, lint (long stories sampled)
	DBOPS_RELIABILITY_REPORT=docs/RELIABILITY.md $(PY) -m pytest $(PARALLEL) $(PYTEST_ARGS)
	DBOPS_RELIABILITY_REPORT=docs/RELIABILITY.md DBOPS_RELIABILITY_APPEND=1 $(PY) -m pytest -m exclusive $(PYTEST_ARGS)

test-all: bootstrap ## every test, the nightly stories included (about an hour and a half)
	DBOPS_NIGHTLY=1 DBOPS_RELIABILITY_REPORT=docs/RELIABILITY.md $(PY) -m pytest $(PARALLEL) $(PYTEST_ARGS)
	DBOPS_NIGHTLY=1 DBOPS_RELIABILITY_REPORT=docs/RELIABILITY.md DBOPS_RELIABILITY_APPEND=1 $(PY) -m pytest -m exclusive $(PYTEST_ARGS)

test-pg-matrix: bootstrap images-pg-matrix ## the migration_risk, pg_backup and alembic_migrate tests on PostgreSQL 13 and 17
	rc=0; for major in $(PG_MATRIX); do \
	  echo "== PostgreSQL $$major"; started=$$(date +%s); \
	  DBOPS_TEST_PG_VERSION=$$major $(PY) -m pytest $(PARALLEL) $(PG_MATRIX_TESTS) $(PYTEST_ARGS) || rc=1; \
	  echo "== PostgreSQL $$major: tests took $$(( $$(date +%s) - started )) s"; \
	done; exit $$rc

test-pg-matrix-ci: ## what CI runs of test-pg-matrix (all but the two version-independent modules)
	$(MAKE) test-pg-matrix PG_MATRIX_TESTS="$(PG_MATRIX_CI)"

test-pg-matrix-sample: ## each version-dependent path of test-pg-matrix once (about a minute per version)
	$(MAKE) test-pg-matrix PG_MATRIX_TESTS="$(PG_MATRIX_SAMPLE)"

test-exclusive: bootstrap ## the tests that restart the Docker engine, alone
	$(PY) -m pytest -m exclusive $(PYTEST_ARGS)

test-unit: ## pure-logic tests only (no services)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: bootstrap ## tests that need PostgreSQL but not Docker
	$(PY) -m pytest -m "not docker and not molecule" $(PYTEST_ARGS)

test-nightly: bootstrap ## the long end-to-end stories `make test` skips (rollback stories, 3,000-table restore, caching proxy)
	DBOPS_NIGHTLY=1 $(PY) -m pytest $(PARALLEL) -m nightly $(PYTEST_ARGS)

test-interrupt: bootstrap ## every task boundary of deploy.yml (low, medium, high), rollback.yml (database) and backup.yml, SIGINT and SIGKILL, then the same command again (hours)
	DBOPS_INTERRUPT_FULL=1 $(PY) -m pytest tests/reliability/test_interrupt.py -k every_task_boundary $(PYTEST_ARGS)

lint: ## ansible-lint, ansible-doc for every module, ansible-test sanity
	$(VENV)/bin/ansible-lint --offline
	for module in $$(ls plugins/modules | sed -n 's/\.py$$//p'); do $(VENV)/bin/ansible-doc dbops.migrations.$$module > /dev/null || exit 1; done
	scripts/sanity

build: ## the collection tarball
	$(VENV)/bin/ansible-galaxy collection build --force --output-path dist .

bench-lint: ## migration_risk against squawk (bench/lint/REPORT.md)
	$(PY) bench/lint/run.py

bench-gate: bootstrap ## deploy.yml's migration check: rendered in the release image against a host checkout (bench/gate/REPORT.md)
	$(PY) bench/gate/run.py

bench-backup: bootstrap ## pg_backup against pg_dump/psql and pg_dump|gzip on a 1 GB database
	$(PY) bench/backup/run.py

bench-restore-cpu: bootstrap ## CPU of client and server in psql and pg_restore restores; the floor on this machine
	$(PY) bench/backup/restore_cpu.py

bench-downtime: bootstrap ## write stalls of naive alembic against alembic_migrate under pgbench load
	$(PY) bench/downtime/run.py

bench-deploy: bootstrap ## failed requests during a release: docker compose up -d against compose_deploy
	$(PY) bench/deploy/run_bench.py

clean:
	rm -rf dist tests/output .pytest_cache
