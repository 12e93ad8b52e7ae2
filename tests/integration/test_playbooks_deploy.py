"""deploy.yml, rollback.yml and maintenance.yml end to end against a private copy of the example stack.

One stack per test class (bringing a stack up is the slow part); the tests of a class run in
order and each one starts from the state the previous one left.
"""
from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers.release import compose_ps, new_release

pytestmark = [pytest.mark.docker, pytest.mark.slow]

VERIFY = [
    {"name": "orders keep their quantity", "query": "SELECT sum(quantity) FROM orders", "expect": 30},
    {"name": "notional backfilled", "query": "SELECT count(*) FROM orders WHERE notional IS NULL", "expect": 0},
]


@pytest.fixture(scope="class")
def release(docker_client, tmp_path_factory):
    rel = new_release(docker_client, tmp_path_factory.mktemp("release"))
    yield rel
    rel.close()


def explain(run, rel) -> str:
    return f"rc={run.rc}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}\n{compose_ps(rel)}"


class TestLowPathFromFreshStack:
    def test_auto_on_an_empty_database_takes_the_low_path(self, release):
        run = release.play("deploy", {"risk": "auto"}, collection_form=True)
        assert run.rc == 0, explain(run, release)
        status, body = release.stack.get("/healthz")
        assert status == 200 and body["revision"] == "0005" and body["version"] == "1.0.0"
        summary = release.reports()[-1]
        assert summary["path"] == "low" and summary["risk"] == "low"
        assert summary["revisions_applied"] == ["0001", "0002", "0003", "0004", "0005"]
        assert summary["backup"] == "none" and summary["health"].startswith("ok")
        assert "revisions applied: 0001, 0002, 0003, 0004, 0005" in run.stdout
        assert not release.lock_held()

    def test_second_run_changes_nothing(self, release):
        app_before = release.container_ids("app")
        run = release.deploy(risk="low")
        assert run.rc == 0, explain(run, release)
        assert release.reports()[-1]["revisions_applied"] == []
        assert release.container_ids("app") == app_before

    @pytest.mark.nightly
    def test_two_app_hosts_migrate_once_and_roll_one_at_a_time(self, release):
        release.write_inventory("1.0.0", app_hosts=("app1", "app2"))
        try:
            run = release.deploy(risk="auto", deploy_serial=1)
        finally:
            release.write_inventory("1.0.0")
        assert run.rc == 0, explain(run, release)
        migrate = run.stdout.split("TASK [dbops.migrations.migrate : Migrate the database to head]")[1].split("TASK [")[0]
        assert "[app1]" in migrate and "[app2]" not in migrate
        # Everything from the first batch of the release play to the finish play (each batch may
        # repeat the play banner).
        release_play = run.stdout.split("PLAY [Finish")[0].split("PLAY [Release - deploy the application", 1)[1]
        batches = release_play.split("TASK [Deploy with skip-migrate and the health gate")[1:]
        assert len(batches) == 2, release_play
        assert "[app1]" in batches[0] and "[app2]" not in batches[0]
        assert "[app2]" in batches[1] and "[app1]" not in batches[1]

    def test_bad_risk_value_fails_before_anything(self, release):
        run = release.deploy(risk="extreme")
        assert run.rc != 0
        assert "risk must be one of low, medium, high or auto (got extreme)" in run.output
        assert "Take the release lock" not in run.stdout


class TestHighPathGateAndRollback:
    def test_setup_at_0004_with_data(self, release):
        run = release.deploy(risk="auto", migration_target="0004")
        assert run.rc == 0, explain(run, release)
        assert release.revision() == "0004"
        release.seed(3)

    def test_check_mode_says_what_the_high_path_would_do_and_changes_nothing(self, release):
        app_before = release.container_ids("app")
        reports_before = sorted(release.report_dir.glob("deploy-*.json"))
        run = release.play("deploy", {"risk": "auto", "approve": True}, check=True)
        assert run.rc == 0, explain(run, release)
        shown = " ".join(run.stdout.split())
        assert "check mode, nothing changed: would apply 0005 (the database stays at 0004)" in shown, explain(run, release)
        assert "would be on during the migration (check mode)" in shown
        assert "Check mode: nothing was written. A backup would go to" in shown
        assert "health: ok (" in shown
        assert "passed (check mode: no migration ran between the two counts)" in shown
        assert release.revision() == "0004" and release.backups() == []
        assert release.container_ids("app") == app_before
        assert release.stack.get("/api/stats")[0] == 200  # no maintenance page
        assert not (release.report_dir / "maintenance.json").exists()
        assert sorted(release.report_dir.glob("deploy-*.json")) == reports_before
        assert not release.lock_held()

    def test_risk_low_for_a_critical_migration_changes_nothing(self, release):
        app_before = release.container_ids("app")
        run = release.deploy(risk="low")
        assert run.rc != 0
        assert "are CRITICAL risk and need the high path; risk=low is not enough" in run.output
        assert "-e risk=high" in run.output and "Nothing was changed" in run.output
        assert release.revision() == "0004"
        assert release.backups() == []
        assert release.container_ids("app") == app_before
        assert release.stack.get("/api/stats")[0] == 200  # no maintenance page
        assert not release.lock_held()

    @pytest.mark.nightly
    def test_high_path_without_approval_is_refused(self, release):
        run = release.deploy(risk="high")
        assert run.rc != 0
        assert "needs an explicit approval: run again with -e approve=true" in run.output
        assert release.revision() == "0004" and release.backups() == []

    @pytest.mark.nightly
    def test_high_path_refuses_to_run_without_backup(self, release):
        run = release.deploy(risk="high", approve=True, backup=False)
        assert run.rc != 0 and "never migrates without a verified backup" in run.output
        assert release.revision() == "0004"

    @pytest.mark.nightly
    def test_high_path_without_a_maintenance_method_asks_for_maintenance_false(self, release):
        run = release.deploy(risk="high", approve=True, dbops_maintenance_method="none")
        assert run.rc != 0
        shown = " ".join(run.output.split())
        assert "maintenance mode is unavailable here: dbops_maintenance_method is none" in shown
        assert "run again with -e maintenance=false" in shown and "Nothing was changed" in shown
        assert release.revision() == "0004" and release.backups() == []

    @pytest.mark.nightly
    def test_maintenance_users_would_not_see_stops_before_the_migration(self, release):
        # /healthz is exempt from the maintenance page: it never answers 503.
        run = release.deploy(risk="high", approve=True, dbops_maintenance_check_url=release.stack.base_url + "/healthz")
        assert run.rc != 0
        shown = " ".join(run.output.split())
        assert "Maintenance mode is NOT served: %s/healthz answered 200 instead of 503" % release.stack.base_url in shown
        assert "the switch was taken back" in shown
        assert release.revision() == "0004" and release.backups() == []
        assert release.stack.get("/api/stats")[0] == 200
        assert not (release.report_dir / "maintenance.json").exists()
        assert not release.lock_held()

    def test_high_path_with_verification(self, release):
        run = release.deploy(risk="auto", approve=True, verify_queries=VERIFY)
        assert run.rc == 0, explain(run, release)
        assert release.revision() == "0005"
        summary = release.reports()[-1]
        assert summary["path"] == "high" and summary["risk"] == "critical"
        assert summary["revisions_applied"] == ["0005"]
        assert summary["maintenance"] == "was on, now off"
        assert "2 verification queries passed" in summary["verification"]
        manifests = release.backups()
        assert len(manifests) == 1 and summary["backup_manifest"] == str(manifests[0])
        manifest = json.loads(manifests[0].read_text())
        assert manifest["alembic_revision"] == "0004" and manifest["tables"]["public.orders"] == 3
        assert "Maintenance mode on" in run.stdout and "Maintenance mode off" in run.stdout
        assert not (release.report_dir / "maintenance.json").exists()
        assert release.stack.get("/api/stats")[0] == 200  # maintenance is off again
        assert release.scalar("SELECT count(*) FROM orders") == 3

    @pytest.mark.nightly
    def test_maintenance_left_on_by_an_interrupted_release_is_named_and_turned_off(self, release):
        on = release.play("maintenance", {"state": "on"})
        assert on.rc == 0, explain(on, release)
        assert release.stack.get("/api/stats")[0] == 503
        # What a release killed after its migration leaves: the page on, and its record.
        record = release.report_dir / "maintenance.json"
        record.write_text(json.dumps({"state": "on", "release_id": "20260101T000000Z-abc123", "user": "alice",
                                      "since": "2026-01-01T00:00:00+00:00", "by": "deploy.yml"}))
        run = release.deploy(risk="auto")
        assert run.rc == 0, explain(run, release)
        shown = " ".join(run.stdout.split())
        assert "Maintenance mode is ON since 2026-01-01T00:00:00+00:00: release 20260101T000000Z-abc123 (alice)" in shown
        summary = release.reports()[-1]
        assert summary["revisions_applied"] == []
        assert summary["maintenance"] == "left on by the interrupted release 20260101T000000Z-abc123, now off"
        assert release.stack.get("/api/stats")[0] == 200
        assert not record.exists()

    def test_rollback_database_to_the_manifest_revision(self, release):
        manifest = release.backups()[-1]
        run = release.play("rollback", {"rollback": "database", "manifest": str(manifest)})
        assert run.rc == 0, explain(run, release)
        assert release.revision() == "0004"
        assert release.scalar("SELECT count(*) FROM orders") == 3

    def test_restore_requires_confirm(self, release):
        run = release.play("rollback", {"rollback": "restore", "manifest": str(release.backups()[-1])})
        assert run.rc != 0 and "-e confirm=true" in run.output
        assert release.revision() == "0004"

    def test_failed_verification_keeps_maintenance_on_and_prints_the_rollback(self, release):
        bad = [{"name": "impossible", "query": "SELECT count(*) FROM users", "expect": 999}]
        run = release.deploy(risk="high", approve=True, verify_queries=bad)
        assert run.rc != 0
        assert "Data verification failed: impossible: expected 999, got 3" in run.output
        assert "Maintenance mode stays ON" in run.output
        manifest = release.backups()[-1]
        assert f"-e rollback=database -e manifest={manifest}" in run.output
        assert f"-e rollback=restore -e manifest={manifest} -e confirm=true" in run.output
        assert release.stack.get("/api/stats")[0] == 503  # maintenance page
        failed = release.reports("deploy-failed-*.json")[-1]
        assert failed["step"] == "migration" and failed["maintenance"] == "on"
        record = json.loads((release.report_dir / "maintenance.json").read_text())
        assert record["state"] == "on" and record["release_id"] and record["by"] == "deploy.yml"
        run = release.play("maintenance", {"state": "off"})
        assert run.rc == 0, explain(run, release)
        assert release.stack.get("/api/stats")[0] == 200
        assert not (release.report_dir / "maintenance.json").exists()

    @pytest.mark.nightly
    def test_restore_with_confirm_puts_the_backup_back_and_serves_again(self, release):
        manifest = release.backups()[-1]
        expected = json.loads(manifest.read_text())
        release.execute("INSERT INTO users(email, name) VALUES ('late@example.com', 'written after the backup')")
        app_before = release.container_ids("app")
        run = release.play("rollback", {"rollback": "restore", "manifest": str(manifest), "confirm": True})
        assert run.rc == 0, explain(run, release)
        assert "Rolled back restore: restored %s (revision %s)" % (manifest, expected["alembic_revision"]) in run.output
        assert release.revision() == expected["alembic_revision"]
        assert release.scalar("SELECT count(*) FROM users") == expected["tables"]["public.users"]
        assert release.scalar("SELECT count(*) FROM users WHERE email = 'late@example.com'") == 0
        # the app was stopped for the restore and started again: same containers, serving, no maintenance page
        assert release.container_ids("app") == app_before
        status, body = release.stack.get("/healthz")
        assert status == 200 and body["revision"] == expected["alembic_revision"]
        assert release.stack.get("/api/stats")[0] == 200

    def test_emergency_stop_stops_the_app_and_collects_the_evidence(self, release, docker_client):
        run = release.play("emergency_stop", collection_form=True)
        assert run.rc == 0, explain(run, release)
        assert "Application: stopped (%s-app-1)" % release.project in run.output
        states = {c.labels["com.docker.compose.service"]: c.status for c in docker_client.containers.list(
            all=True, filters={"label": "com.docker.compose.project=%s" % release.project})}
        assert states["app"] == "exited" and states["db"] == "running" and states["nginx"] == "running", states
        [folder] = sorted(release.report_dir.glob("emergency-*"))
        assert json.loads((folder / "alembic_version.json").read_text()) == [{"version_num": release.revision()}]
        # the app is stopped: nobody else is connected
        assert json.loads((folder / "pg_stat_activity.json").read_text()) == []
        assert any(lock["relation"] == "pg_stat_activity" for lock in json.loads((folder / "pg_locks.json").read_text()))
        containers = json.loads((folder / "containers.json").read_text())
        assert {"app", "db", "nginx"} <= {c["Labels"]["com.docker.compose.service"] for c in containers}
        logs = (folder / "compose-logs.txt").read_text()
        assert "db-1" in logs and "\x1b[" not in logs
        assert release.password not in "".join(p.read_text() for p in folder.iterdir())
        again = release.play("emergency_stop", {"stop_app": False})
        assert again.rc == 0, explain(again, release)
        assert "NOT stopped: stop_app=false" in again.output
        stopped_again = release.play("emergency_stop")
        assert stopped_again.rc == 0 and "Application: stopped (nothing was running)" in stopped_again.output
        assert len(list(release.report_dir.glob("emergency-*"))) == 3


@pytest.mark.nightly
class TestBrokenReleaseAndMediumPath:
    def test_setup_at_0002(self, release):
        run = release.deploy(migration_target="0002")
        assert run.rc == 0, explain(run, release)
        release.seed(2)

    def test_medium_path_takes_a_backup_after_approval(self, release):
        run = release.deploy(risk="medium", approve=True, migration_target="0003")
        assert run.rc == 0, explain(run, release)
        summary = release.reports()[-1]
        assert summary["path"] == "medium" and summary["revisions_applied"] == ["0003"]
        assert len(release.backups()) == 1 and summary["backup_manifest"] == str(release.backups()[0])
        assert release.revision() == "0003"

    def test_broken_release_is_rolled_back(self, release):
        release.build_variant("6.6.6", fault="crash")
        run = release.deploy(app_version="6.6.6", skip_migrate=True)
        assert run.rc != 0
        assert "The previous release was brought back automatically" in run.output
        status, body = release.stack.get("/healthz")
        assert status == 200 and body["version"] == "1.0.0"
        failed = release.reports("deploy-failed-*.json")[-1]
        assert failed["step"] == "deploy" and failed["path"] == "skip"
        assert not release.lock_held()

    def test_code_only_release(self, release):
        release.build_variant("1.1.0")
        run = release.deploy(app_version="1.1.0", skip_migrate=True)
        assert run.rc == 0, explain(run, release)
        assert release.stack.get("/healthz")[1]["version"] == "1.1.0"
        assert release.revision() == "0003"

    def test_rollback_app_to_the_backup_tag(self, release):
        # 1.1.0 runs now; the backup tag holds 1.0.0 and takes 1.1.0's place.
        run = release.play("rollback", {"rollback": "app", "app_version": "1.1.0"})
        assert run.rc == 0, explain(run, release)
        assert release.stack.get("/healthz")[1]["version"] == "1.0.0"


# A release whose image adds a plain CREATE INDEX on orders (not CONCURRENTLY: it blocks writes).
INDEX_REVISION = '''"""index orders by symbol"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_orders_symbol", "orders", ["symbol"])


def downgrade():
    op.drop_index("ix_orders_symbol", table_name="orders")
'''


def build_release_with_revision(rel, version: str, tmp_path) -> str:
    """The release image `version`: the running release plus migrations/versions/0006 (the host has none of it)."""
    context = tmp_path / ("image-" + version)
    context.mkdir()
    (context / "0006_index_orders_symbol.py").write_text(INDEX_REVISION)
    (context / "Dockerfile").write_text(f"FROM {rel.image}:1.0.0\nENV APP_VERSION={version}\n"
                                        "COPY 0006_index_orders_symbol.py /app/migrations/versions/\n")
    tag = f"{rel.image}:{version}"
    rel.client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    return tag


def host_checkout_a_release_behind(tmp_path):
    """What an app host often holds: the previous release's alembic.ini and revisions (0001-0005)."""
    import shutil

    from tests.helpers.stack import APP_DIR
    checkout = tmp_path / "checkout"
    shutil.copytree(APP_DIR, checkout, ignore=shutil.ignore_patterns("__pycache__", ".wheels"))
    return checkout / "alembic.ini"


class TestTheGateJudgesTheReleaseImage:
    def test_setup_at_0005_with_a_large_orders_table(self, release):
        run = release.deploy(risk="auto")
        assert run.rc == 0, explain(run, release)
        release.seed(3)
        release.execute("INSERT INTO orders(account_id, symbol, side, quantity, price) "
                        "SELECT a.id, 'S' || (g % 50), 'buy', 10, 1.5 FROM accounts a, generate_series(1, 100000) g;"
                        "ANALYZE orders;")
        assert release.scalar("SELECT count(*) FROM orders") == 300003

    def test_a_host_checkout_a_release_behind_does_not_take_the_low_path(self, release, tmp_path):
        build_release_with_revision(release, "1.1.0", tmp_path)
        stale = host_checkout_a_release_behind(tmp_path)
        variables = dict(release.group_vars("1.1.0"), dbops_alembic_config=str(stale))
        (release.inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(variables))
        run = release.deploy(risk="auto")
        assert run.rc != 0, explain(run, release)
        shown = " ".join(run.stdout.split())
        assert "Pending revisions in the release image 1.1.0 (compose service migration): 0006;" in shown, \
            explain(run, release)
        assert "taking the low path" not in run.stdout
        assert "needs an explicit approval" in run.output and "Nothing was changed" in run.output
        assert release.revision() == "0005"
        assert release.scalar("SELECT to_regclass('ix_orders_symbol')") is None
        assert release.stack.get("/healthz")[1]["version"] == "1.0.0"
        assert not release.lock_held()

    def test_without_a_host_checkout_the_release_is_judged_and_migrated_as_analysed(self, release):
        variables = release.group_vars("1.1.0")
        del variables["dbops_alembic_config"]
        (release.inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(variables))
        run = release.deploy(risk="auto", approve=True)
        assert run.rc == 0, explain(run, release)
        summary = release.reports()[-1]
        # 300,003 rows: a table of medium size, where a plain CREATE INDEX is medium risk (blocks writes for the build)
        assert summary["path"] == "medium" and summary["risk"] == "medium", summary
        assert summary["revisions_applied"] == ["0006"] and summary["backup_manifest"] != "none"
        assert release.scalar("SELECT to_regclass('ix_orders_symbol')::text") == "ix_orders_symbol"
        health = release.stack.get("/healthz")[1]
        assert health == dict(health, version="1.1.0", revision="0006")
        record = json.loads((release.report_dir / "last-release.json").read_text())
        assert record["result"] == "ok" and record["revision_before"] == "0005" and record["app_version"] == "1.1.0"
