"""Pure parts of the scratch container of migration_rehearsal: options, leftovers of killed runs, the
version check, and a check-mode rehearsal against a stand-in Docker engine (nothing starts, nothing goes)."""
from __future__ import annotations

import datetime
import json
import os

import docker.errors
import pytest
import yaml

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateRequest
from ansible_collections.dbops.migrations.plugins.module_utils.pg import ConnInfo
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import container as box
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import records
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.records import RehearsalError
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import Rehearsal, RehearsalRequest

pytestmark = pytest.mark.unit

HERE = {"host": "h1", "boot_id": "boot-1", "pid": os.getpid(), "pid_start": backups.process_start(os.getpid()),
        "started_at": "2026-12-10T12:00:00+00:00"}
DEAD = dict(HERE, pid=2 ** 22 + 12345, pid_start="1")


# ---------------------------------------------------------------- options

def test_no_option_no_container():
    assert box.container_spec(None) is None


def test_the_option_with_its_defaults():
    spec = box.container_spec({"image": " dbops/postgres:15 ", "network": None, "start_timeout": None})
    assert spec == box.ContainerSpec(image="dbops/postgres:15", network=None, start_timeout=120.0)
    spec = box.container_spec({"image": "postgres:15", "network": "shop_default", "start_timeout": 30})
    assert spec.network == "shop_default" and spec.start_timeout == 30.0


@pytest.mark.parametrize("options, says", [
    ({"image": ""}, "scratch_container.image is required"),
    ({"image": None}, "scratch_container.image is required"),
    ({"image": "postgres 15"}, "not an image reference"),
    ({"image": "postgres:15", "network": "bridge"}, "user-defined networks"),
    ({"image": "postgres:15", "network": "host"}, "cannot be host"),
    ({"image": "postgres:15", "network": "none"}, "<project>_default"),
    ({"image": "postgres:15", "start_timeout": 0}, "start_timeout must be more than 0"),
    ({"image": "postgres:15", "start_timeout": -5}, "start_timeout must be more than 0"),
])
def test_bad_options_are_refused_with_what_to_do(options, says):
    with pytest.raises(RehearsalError, match=says.replace("(", r"\(")):
        box.container_spec(options)


def test_the_compose_executor_needs_the_network_to_reach_the_container():
    with pytest.raises(RehearsalError, match="executor=compose with scratch_container needs scratch_container.network"):
        box.check_executor(box.ContainerSpec(image="postgres:15"), "compose")
    box.check_executor(box.ContainerSpec(image="postgres:15", network="shop_default"), "compose")
    box.check_executor(box.ContainerSpec(image="postgres:15"), "local")
    box.check_executor(None, "compose")


def test_on_a_network_alembic_reaches_the_alias_on_5432():
    on_net = box.ContainerSpec(image="postgres:15", network="shop_default")
    assert box.executor_address(on_net, "dbops-rehearsal-shop-1a2b3c4d") == ("dbops-rehearsal-shop-1a2b3c4d", 5432)
    assert box.executor_address(box.ContainerSpec(image="postgres:15"), None) is None


def test_names_and_users():
    name = box.container_name("Shop EU " + "x" * 80)
    assert name.startswith("dbops-rehearsal-shop_eu_") and len(name) <= len("dbops-rehearsal-") + 30 + 9
    assert box.container_name("shop") != box.container_name("shop")
    assert box.container_user("app") == "app"
    for odd in (None, "", "App", "pg_monitor", "app@server", "a-b"):
        assert box.container_user(odd) == "postgres"


def test_the_option_is_documented_as_specified():
    from ansible_collections.dbops.migrations.plugins.modules import migration_rehearsal as module
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]["scratch_container"]
    spec = module.argument_spec()["scratch_container"]
    assert documented["type"] == spec["type"] == "dict"
    for name, option in spec["options"].items():
        doc = documented["suboptions"][name]
        assert doc["type"] == option["type"], name
        assert doc.get("default") == option.get("default"), name
        assert bool(doc.get("required")) == bool(option.get("required")), name
    assert sorted(documented["suboptions"]) == sorted(spec["options"])
    assert "scratch" in yaml.safe_load(module.RETURN)


# ---------------------------------------------------------------- labels, password, logs

def test_labels_carry_the_owner_record_and_never_the_password():
    labels = box.owner_labels(HERE, "dbops-rehearsal-shop-1")
    assert labels[box.LABEL] == "1"
    record = backups.parse_owner_record(labels[box.OWNER_LABEL])
    assert record["kind"] == box.OWNER_KIND and record["pid"] == HERE["pid"] and record["boot_id"] == "boot-1"
    password = box.new_password()
    assert len(password) >= 32 and password != box.new_password()
    env = box.environment("app", password)
    assert env == {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"}
    assert password not in json.dumps(labels)


def test_log_lines_are_the_last_ones_on_one_line_and_masked():
    raw = ("\n".join("line %d" % i for i in range(30)) + "\nFATAL: password s3cret-pw rejected\n").encode()
    tail = box.log_tail(raw, "s3cret-pw")
    assert tail.startswith("line 11 | ") and "s3cret-pw" not in tail and "********" in tail
    assert box.log_tail(b"") == "(none)"


def test_a_refused_login_is_not_waited_out():
    assert box.refused_login('FATAL:  password authentication failed for user "app"')
    assert box.refused_login('FATAL:  role "app" does not exist')
    assert not box.refused_login("server closed the connection unexpectedly")
    assert not box.refused_login('connection to server at "127.0.0.1", port 49154 failed: Connection refused')


def test_the_published_port_is_read_from_the_inspect_data():
    attrs = {"NetworkSettings": {"Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49154"}]}}}
    assert box.published_port(attrs) == 49154
    assert box.published_port({"NetworkSettings": {"Ports": {"5432/tcp": None}}}) is None
    assert box.published_port({}) is None


# ---------------------------------------------------------------- leftovers of killed runs

def labels_of(owner, kind=box.OWNER_KIND):
    return {box.LABEL: "1", box.OWNER_LABEL: backups.owner_record(kind, owner, name="c")}


def test_a_container_of_a_dead_run_is_removed_a_live_one_kept_another_host_reported():
    action, why = box.leftover_verdict("c1", labels_of(DEAD), HERE)
    assert action == box.REMOVE and "which is gone" in why
    assert box.leftover_verdict("c2", labels_of(HERE), HERE)[0] == box.KEEP
    action, why = box.leftover_verdict("c3", labels_of(dict(HERE, host="h2")), HERE)
    assert action == box.REPORT and "only that host" in why
    assert box.leftover_verdict("c4", labels_of(dict(HERE, boot_id="boot-0")), HERE)[0] == box.REMOVE
    assert box.leftover_verdict("c5", labels_of(dict(HERE, pid="x")), HERE)[0] == box.REPORT


def test_a_container_without_a_readable_owner_record_is_only_reported():
    for labels in ({box.LABEL: "1"}, {box.LABEL: "1", box.OWNER_LABEL: "{not json"},
                   labels_of(DEAD, kind="scratch")):
        action, why = box.leftover_verdict("c6", labels, HERE)
        assert action == box.REPORT and "docker rm -f -v c6" in why


# ---------------------------------------------------------------- the version check

def manifest(num, text=None):
    return {"server_version_num": num, "server_version": text or backups.server_version_text(num)}


def test_another_major_than_the_archive_is_refused_with_the_image_to_use():
    problem = box.version_problem("dbops/postgres:17", 170002, manifest(150008))
    assert problem.startswith("the image dbops/postgres:17 runs PostgreSQL 17, the archive comes from PostgreSQL 15 "
                              "(15.8): use an image of PostgreSQL 15")
    assert "postgres:15" in problem and "nothing was restored" in problem
    older = box.version_problem("postgres:13", 130016, manifest(170002))
    assert "runs PostgreSQL 13, the archive comes from PostgreSQL 17" in older


def test_the_same_major_fits_whatever_the_minor():
    assert box.version_problem("postgres:15", 150002, manifest(150008)) is None
    assert box.version_problem("postgres:9.6", 90624, manifest(90610)) is None
    assert "runs PostgreSQL 9.6, the archive comes from PostgreSQL 10" in box.version_problem(
        "postgres:9.6", 90624, manifest(100023))


def test_a_manifest_without_a_server_version_is_not_compared():
    assert box.archive_major({}) is None and box.archive_major({"server_version_num": True}) is None
    assert box.version_problem("postgres:15", 150002, {}) is None


# ---------------------------------------------------------------- against a stand-in engine

class FakeContainer:
    def __init__(self, engine, name, labels):
        self.engine, self.name, self.labels = engine, name, labels

    def remove(self, force=False, v=False):
        assert force and v, "a scratch container goes with force and its anonymous volumes"
        self.engine.removed.append(self.name)
        self.engine.items.pop(self.name)


class FakeApi:
    """The low-level calls leftovers use: one list answer with names and labels, removal by id."""

    def __init__(self, engine):
        self.engine = engine
        self.vanish_before_removal: set = set()

    def containers(self, all=False, filters=None):
        assert all and filters == {"label": "%s=1" % box.LABEL}
        return [{"Id": "id-" + c.name, "Names": ["/" + c.name], "Labels": c.labels}
                for c in self.engine.items.values() if c.labels.get(box.LABEL) == "1"]

    def remove_container(self, container_id, force=False, v=False):
        assert force and v, "a scratch container goes with force and its anonymous volumes"
        name = container_id[len("id-"):]
        if name in self.vanish_before_removal:
            self.engine.items.pop(name, None)
        if name not in self.engine.items:
            raise docker.errors.NotFound("No such container: %s" % container_id)
        self.engine.removed.append(name)
        self.engine.items.pop(name)


class FakeEngine:
    """containers.get, images.get and the low-level list/remove: enough for leftovers, check mode and removal."""

    def __init__(self, containers=(), images=("dbops/postgres:15",)):
        self.items = {name: FakeContainer(self, name, labels) for name, labels in containers}
        self.image_names = set(images)
        self.removed = []
        self.containers, self.images = self, self
        self.api = FakeApi(self)

    def list(self, all=False, filters=None):
        raise AssertionError("containers.list inspects each container and fails on one removed meanwhile")

    def get(self, name):
        if name in self.items:
            return self.items[name]
        if name in self.image_names:
            return object()
        error = docker.errors.ImageNotFound if "/" in name or ":" in name else docker.errors.NotFound
        raise error("no such object: %s" % name)

    def create(self, *args, **kwargs):
        raise AssertionError("nothing may start here")


def leftovers(here=HERE):
    dead = dict(here, pid=2 ** 22 + 12345, pid_start="1")
    return [("dead", labels_of(dead)), ("alive", labels_of(here)), ("elsewhere", labels_of(dict(here, host="h2"))),
            ("unlabelled", {box.LABEL: "1"})]


def scratch_box(engine, spec=None):
    return box.ScratchContainer(spec or box.ContainerSpec(image="dbops/postgres:15"), HERE, "shop", "app",
                                client_factory=lambda: engine)


def test_check_mode_removes_no_leftover_and_says_which_it_would():
    engine = FakeEngine(leftovers())
    out = scratch_box(engine).clean_leftovers(HERE, check_mode=True)
    assert engine.removed == [] and len(engine.items) == 4
    assert [entry.split(" (")[0] for entry in out["dropped"]] == ["container dead"]
    assert [kept["container"] for kept in out["kept"]] == ["elsewhere", "unlabelled"]


def test_only_leftovers_of_dead_runs_of_this_host_are_removed():
    engine = FakeEngine(leftovers())
    out = scratch_box(engine).clean_leftovers(HERE, check_mode=False)
    assert engine.removed == ["dead"] and sorted(engine.items) == ["alive", "elsewhere", "unlabelled"]
    assert len(out["dropped"]) == 1 and len(out["kept"]) == 2


def test_a_leftover_another_run_removes_meanwhile_is_not_an_error():
    engine = FakeEngine(leftovers())
    engine.api.vanish_before_removal.add("dead")
    out = scratch_box(engine).clean_leftovers(HERE, check_mode=False)
    assert engine.removed == [] and "dead" not in engine.items
    assert [entry.split(" (")[0] for entry in out["dropped"]] == ["container dead"]


def test_a_container_without_a_name_in_the_list_answer_is_named_by_its_id():
    assert box.listed_name({"Id": "0123456789abcdef", "Names": []}) == "0123456789ab"
    assert box.listed_name({"Id": "x", "Names": ["/dbops-rehearsal-shop-1"]}) == "dbops-rehearsal-shop-1"


def test_removal_is_by_name_even_when_the_create_answer_never_came():
    engine = FakeEngine()
    scratch = scratch_box(engine)
    assert scratch.remove() is None  # nothing was asked of the engine
    scratch._create_sent = True
    engine.items[scratch.name] = FakeContainer(engine, scratch.name, box.owner_labels(HERE, scratch.name))
    assert scratch.remove() is True and engine.removed == [scratch.name]
    assert scratch.remove() is True  # already gone counts as removed


def test_removal_retries_then_says_why(monkeypatch):
    monkeypatch.setattr(box.time, "sleep", lambda _s: None)
    scratch = box.ScratchContainer(box.ContainerSpec(image="dbops/postgres:15"), HERE, "shop", None,
                                   client_factory=lambda: (_ for _ in ()).throw(RuntimeError("engine gone")))
    scratch._create_sent = True
    assert scratch.remove(timeout=0) is False and scratch.removed is False and "engine gone" in scratch.remove_error


def test_the_description_has_no_password():
    scratch = scratch_box(FakeEngine(), box.ContainerSpec(image="dbops/postgres:15", network="shop_default"))
    scratch.server_num = 150008
    described = scratch.describe()
    assert described == {"kind": "container", "image": "dbops/postgres:15", "container": scratch.name,
                         "network": "shop_default", "alias": scratch.name, "server_version": "15.8"}
    assert scratch.password not in json.dumps(described) and scratch.user == "app"


def test_a_missing_sdk_names_the_pip_package(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "docker", None)
    with pytest.raises(RehearsalError, match="pip install docker"):
        box.docker_client()


# ---------------------------------------------------------------- the rehearsal with a container

NOW = datetime.datetime.now(datetime.timezone.utc)


def verified_archive(folder, database="shop"):
    name = "%s_20261210T020000Z.dump" % database
    (folder / name).write_bytes(b"PGDMP")
    data = {"file": name, "sha256": "x", "database": database, "finished_at": NOW.isoformat(),
            "server_version_num": 150008, "server_version": "15.8", "alembic_revision": "0001",
            "verification": {"verified": True, "mode": "list"}}
    path = folder / backups.manifest_name(name)
    path.write_text(json.dumps(data))
    return str(path)


def request(archive=None, backup_dir=None, check=True):
    return RehearsalRequest(migrate=MigrateRequest(config="alembic.ini"), archive=archive, backup_dir=backup_dir,
                            check=check, container=box.ContainerSpec(image="dbops/postgres:15"))


def test_with_a_container_and_an_archive_no_connection_options_are_needed(tmp_path, monkeypatch):
    engine = FakeEngine(leftovers(backups.this_process()))
    monkeypatch.setattr(box, "docker_client", lambda: engine)
    rehearsal = Rehearsal(request(archive=verified_archive(tmp_path)), ConnInfo(), runner=None)
    result = rehearsal.run()
    assert engine.removed == [] and len(engine.items) == 4  # check mode: nothing removed, nothing started
    assert result["scratch"]["kind"] == "container" and result["scratch"]["image"] == "dbops/postgres:15"
    assert result["scratch_db"].startswith("dbops_rehearsal_shop_") and rehearsal.database == "shop"
    assert "a new container of dbops/postgres:15" in result["msg"] and "then remove the container" in result["msg"]
    assert "would first remove 1 container(s) of killed runs" in result["msg"]
    assert result["leftovers"] == [{"container": "elsewhere", "reason": result["leftovers"][0]["reason"]},
                                   {"container": "unlabelled", "reason": result["leftovers"][1]["reason"]}]
    assert rehearsal.container.password not in json.dumps(result, default=str)


def test_without_an_archive_the_database_must_be_named():
    with pytest.raises(RehearsalError, match="with scratch_container and archive it may be left out"):
        Rehearsal(request(backup_dir="/nowhere"), ConnInfo(), runner=None)
    Rehearsal(request(backup_dir="/nowhere"), ConnInfo(dbname="shop"), runner=None)


def test_allow_production_server_is_not_needed_with_a_container(tmp_path, monkeypatch):
    monkeypatch.setattr(box, "docker_client", lambda: FakeEngine())
    req = request(archive=verified_archive(tmp_path))
    assert req.allow_production_server is False
    assert Rehearsal(req, ConnInfo(host="db.example.com", dbname="shop", password="prod-pw"), None).run()["passed"] is None


# ---------------------------------------------------------------- the record and the approval line

def test_the_summary_says_where_a_container_rehearsal_ran():
    record = {"revisions": ["0005"], "archive_finished_at": "A", "finished_at": "F",
              "measurements": [{"revision": "0005", "duration_s": 4.2, "lock_s": 3.9, "wal_bytes": 1024}],
              "calibration": {"disagreements": []}}
    plain = records.summary_line(record)
    assert plain.startswith("rehearsed 0005 on A (F): 0005 4.2 s wall")
    assert records.summary_line(dict(record, scratch={"kind": "database", "server": "db:5432"})) == plain
    line = records.summary_line(dict(record, scratch={"kind": "container", "image": "dbops/postgres:15",
                                                      "server_version": "15.8"}))
    assert line.startswith("rehearsed 0005 on A (F) in a container of dbops/postgres:15 (PostgreSQL 15.8): 0005 4.2 s")
