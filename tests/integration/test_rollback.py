"""rollback.yml end to end on a private copy of the example stack: the way back after a release.

One stack for the class; the tests run in order and each starts from the state the previous one
left (bringing a stack up is the slow part).
"""
from __future__ import annotations

import json
import re
import shlex
import threading

import pytest

from tests.helpers.release import compose_ps, new_release

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.nightly]

FAST_FAIL = {"dbops_lock_timeout": "100ms", "migrate_retries": 0}


@pytest.fixture(scope="class")
def release(docker_client, tmp_path_factory):
    rel = new_release(docker_client, tmp_path_factory.mktemp("rollback"))
    yield rel
    rel.close()
    for tag in ("dbops-rollback-otherproj.1.0.0",):
        try:
            docker_client.images.remove(f"{rel.image}:{tag}", force=True)
        except Exception:
            pass


def explain(run, rel) -> str:
    return f"rc={run.rc}\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}\n{compose_ps(rel)}"


def printed_commands(output: str, kind: str) -> list[str]:
    """The rollback commands of one kind (application, database, ...) as the failure printed them."""
    # the failure message is shown JSON-escaped: one line per "\n"
    text = output.replace("\\n", "\n")
    # the message appears twice (the error line and the task result): each command once
    found = re.findall(r"^%s[^:]*: (ansible-playbook dbops\.migrations\.rollback [^\n\"]*)" % kind, text, re.M)
    return sorted(set(found))


def extra_vars(command: str) -> dict[str, str]:
    argv = shlex.split(command)
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-e")


class Holder:
    """An open transaction that holds a lock on a table until released."""

    def __init__(self, rel, table: str):
        self.conn = rel.connect()
        self.cur = self.conn.cursor()
        self.cur.execute(f"SELECT 1 FROM {table} LIMIT 1")

    def release(self):
        try:
            self.conn.rollback()
        except Exception as exc:  # the server may have ended the session; say so in the test's output
            print("lock holder ended:", exc)
        self.conn.close()


def image_id(client, ref: str) -> str:
    return client.images.get(ref).id


def database_names(rel) -> list[str]:
    conn = rel.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database ORDER BY 1")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


class TestWayBack:
    def test_setup_at_0003_with_data(self, release):
        release.stack.up()  # the operator's stack, running 1.0.0 on an empty database
        run = release.deploy(migration_target="0003")
        assert run.rc == 0, explain(run, release)
        release.seed(3)
        record = json.loads((release.report_dir / "last-release.json").read_text())
        assert record["result"] == "ok" and record["revision_before"] is None
        assert record["version_table"] == "alembic_version" and record["version_table_present"] is False
        assert (release.report_dir / "releases" / (record["release_id"] + ".json")).stat().st_mode & 0o777 == 0o640

    def test_lock_timeout_with_nothing_applied_prints_no_database_rollback(self, release):
        holder = Holder(release, "orders")  # 0004 rewrites orders: it cannot get its lock
        try:
            run = release.deploy(risk="high", approve=True, **FAST_FAIL)
        finally:
            holder.release()
        assert run.rc != 0
        text = run.output.replace("\\n", "\n")
        assert "The database did not change: it stays at 0003." in text, explain(run, release)
        assert "rollback=database" not in text and "rollback=restore" not in text
        assert "migration_target=-1" not in text
        assert "Maintenance mode was turned off again" in text
        assert release.stack.get("/api/stats")[0] == 200
        assert release.revision() == "0003"
        record = json.loads((release.report_dir / "last-release.json").read_text())
        assert record["result"] == "failed" and record["step"] == "migration" and record["revision_before"] == "0003"
        assert record["images_before"]["app"]["image"] == f"{release.image}:1.0.0"
        assert record["images_before"]["app"]["image_id"] == image_id(release.client, f"{release.image}:1.0.0")

    def test_lock_timeout_after_one_revision_prints_the_exact_database_rollback(self, release):
        holder = Holder(release, "users")  # 0004 (orders) applies, 0005 drops a users column: blocked
        try:
            run = release.deploy(risk="high", approve=True, **FAST_FAIL)
        finally:
            holder.release()
        assert run.rc != 0
        assert release.revision() == "0004", explain(run, release)
        text = run.output.replace("\\n", "\n")
        assert "The database changed: it was at 0003 and is now at 0004." in text
        assert "Maintenance mode stays ON" in text
        [command] = printed_commands(run.output, "database")
        args = extra_vars(command)
        assert args["rollback"] == "database" and args["migration_target"] == "0003"
        assert args["app_version"] == "1.0.0" and args["manifest"] == str(release.backups()[-1])
        assert "-1" not in args.values()
        failed = release.reports("deploy-failed-*.json")[-1]
        assert any(command in line for line in failed["rollback"])
        # run the printed command as it is
        back = release.play("rollback", args, collection_form=True)
        assert back.rc == 0, explain(back, release)
        assert release.revision() == "0003"
        assert release.scalar("SELECT data_type FROM information_schema.columns "
                              "WHERE table_name = 'orders' AND column_name = 'quantity'") == "integer"
        assert release.scalar("SELECT count(*) FROM users WHERE legacy_status IS NOT NULL") == 3
        off = release.play("maintenance", {"state": "off"})
        assert off.rc == 0, explain(off, release)

    def test_release_rolled_back_leaves_other_tags_and_projects_alone(self, release, docker_client):
        release.build_variant("1.1.0")
        run = release.deploy(app_version="1.1.0", risk="high", approve=True)
        assert run.rc == 0, explain(run, release)
        assert release.revision() == "0005"
        assert release.stack.get("/healthz")[1]["version"] == "1.1.0"
        # another project keeps its own backup of the same repository, holding another image
        foreign = f"{release.image}:dbops-rollback-otherproj.1.0.0"
        docker_client.images.get(f"{release.image}:1.1.0").tag(release.image, "dbops-rollback-otherproj.1.0.0")
        ids = {ref: image_id(docker_client, ref) for ref in
               (f"{release.image}:1.0.0", f"{release.image}:1.1.0", foreign)}
        run = release.play("rollback", {"rollback": "app"}, collection_form=True)
        assert run.rc == 0, explain(run, release)
        assert release.stack.get("/healthz")[1]["version"] == "1.0.0"
        assert {ref: image_id(docker_client, ref) for ref in ids} == ids
        [app] = docker_client.containers.list(filters={"label": [f"com.docker.compose.project={release.project}",
                                                                 "com.docker.compose.service=app"]})
        assert app.image.id == ids[f"{release.image}:1.0.0"]
        assert f"Rolled back app: the application runs app: {release.image}:1.0.0" in run.output

    def test_rollback_version_needs_the_compose_tag_variable(self, release, docker_client):
        before = release.container_ids("app")
        run = release.play("rollback", {"rollback": "app", "rollback_version": "1.1.0",
                                        "dbops_compose_tag_var": "RELEASE_TAG"})
        assert run.rc != 0
        assert "no compose file" in run.output and "${RELEASE_TAG}" in run.output and "Nothing was changed" in run.output
        assert release.container_ids("app") == before
        run = release.play("rollback", {"rollback": "app", "rollback_version": "1.1.0"})
        assert run.rc == 0, explain(run, release)
        assert release.stack.get("/healthz")[1]["version"] == "1.1.0"

    @pytest.mark.parametrize("target, expected", [
        ("base", "migration_target=base would revert every revision"),
        ("-1", "is relative"),
        ("head", "is not a rollback"),
        ("c0ffee00", "Cannot plan the downgrade"),
    ])
    def test_database_rollback_refuses_unsafe_targets(self, release, target, expected):
        run = release.play("rollback", {"rollback": "database", "migration_target": target, "app_version": "1.1.0"})
        assert run.rc != 0 and expected in run.output, explain(run, release)
        assert "Nothing was changed" in run.output
        assert release.revision() == "0005"

    def test_downgrade_that_drops_a_column_lists_it_and_backs_up_first(self, release):
        backups = release.backups()
        run = release.play("rollback", {"rollback": "database", "migration_target": "0004", "app_version": "1.1.0"})
        assert run.rc == 0, explain(run, release)
        assert "It LOSES:" in run.output and "orders.notional" in run.output
        new = [b for b in release.backups() if b not in backups]
        assert len(new) == 1, release.backups()
        manifest = json.loads(new[0].read_text())
        assert manifest["alembic_revision"] == "0005" and manifest["tables"]["public.orders"] == 3
        assert f"Backup taken first: {new[0]}" in run.output
        assert release.revision() == "0004"
        assert release.scalar("SELECT count(*) FROM information_schema.columns "
                              "WHERE table_name = 'orders' AND column_name = 'notional'") == 0

    def test_restore_keeps_the_replaced_database_and_restores_twice(self, release):
        manifest = release.backups()[-1]
        expected = json.loads(manifest.read_text())
        release.execute("INSERT INTO users(email, name) VALUES ('late@example.com', 'written after the backup')")
        run = release.play("rollback", {"rollback": "restore", "manifest": str(manifest), "confirm": True})
        assert run.rc == 0, explain(run, release)
        assert release.revision() == "0005"
        assert release.scalar("SELECT count(*) FROM users") == expected["tables"]["public.users"]
        [kept] = re.findall(r"the replaced database is kept as (\S+?)\.", run.output)
        assert kept in database_names(release)
        assert re.search(r"users: 4 -> 3", run.output), run.output[-4000:]
        drop = re.search(r"(ansible-playbook dbops\.migrations\.rollback [^\"\n]*-e rollback=drop_replaced[^\"\n]*)",
                         run.output).group(1)
        assert release.stack.get("/healthz")[0] == 200 and release.stack.get("/api/stats")[0] == 200
        # the same backup again, after losing rows: it must restore again
        release.execute("DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 2)")
        again = release.play("rollback", {"rollback": "restore", "manifest": str(manifest), "confirm": True})
        assert again.rc == 0, explain(again, release)
        assert release.scalar("SELECT count(*) FROM orders") == expected["tables"]["public.orders"]
        [kept_again] = re.findall(r"the replaced database is kept as (\S+?)\.", again.output)
        gone = release.play("rollback", extra_vars(drop))
        assert gone.rc == 0, explain(gone, release)
        names = database_names(release)
        assert kept not in names and kept_again in names and "auto_trader" in names
        refused = release.play("rollback", {"rollback": "drop_replaced", "replaced_database": "auto_trader",
                                            "confirm": True})
        assert refused.rc != 0 and "is the live database" in refused.output
        assert "auto_trader" in database_names(release)

    def test_emergency_stop_says_maintenance_is_on_and_names_the_backup(self, release):
        on = release.play("maintenance", {"state": "on"})
        assert on.rc == 0, explain(on, release)
        run = release.play("emergency_stop", {"stop_app": False})
        assert run.rc == 0, explain(run, release)
        assert "Maintenance mode: ON" in run.output
        assert "manifest=PATH" not in run.output
        # The backup of the last release, as its record names it; the newest backup without one.
        recorded = json.loads((release.report_dir / "last-release.json").read_text()).get("backup_manifest")
        assert "-e manifest=%s -e confirm=true" % (recorded or release.backups()[-1]) in run.output
        assert "no migration container is left" in run.output
        assert "Revision: 0005 (version table alembic_version)" in run.output
        off = release.play("maintenance", {"state": "off"})
        assert off.rc == 0, explain(off, release)
