"""Pure logic of compose_deploy: config parsing, container lists, plans, health, messages."""
from __future__ import annotations

import json

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan
from ansible_collections.dbops.migrations.plugins.module_utils.compose import engine
from ansible_collections.dbops.migrations.plugins.module_utils.compose.command import project_argv

# Recorded from `docker compose -f docker-compose.prod.yml --profile '*' config --format json`
# (compose 2.26), trimmed to the keys compose_deploy reads.
CONFIG = {
    "name": "auto_trader",
    "services": {
        "db": {"image": "dbops/postgres:15", "healthcheck": {"test": ["CMD-SHELL", "pg_isready"]},
               "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5432, "published": "55432",
                          "protocol": "tcp"}]},
        "app": {"image": "auto_trader:1.1.0", "depends_on": {"db": {"condition": "service_healthy"}}},
        "nginx": {"image": "dbops/nginx:1.22", "healthcheck": {"test": ["CMD-SHELL", "nginx -t"]},
                  "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080",
                             "protocol": "tcp"}]},
        "migration": {"image": "auto_trader:1.1.0", "profiles": ["migration"]},
        "worker": {"image": "auto_trader:1.1.0", "container_name": "worker",
                   "healthcheck": {"disable": True}},
    },
}

# Recorded from community.docker.docker_host_info (containers, verbose_output) during a surge.
HOST_INFO = [
    {"Id": "aaa111", "Names": ["/auto_trader-app-1"], "Image": "auto_trader:1.0.0", "ImageID": "sha256:old",
     "State": "running", "Status": "Up 2 minutes (healthy)",
     "Labels": {compose_plan.PROJECT_LABEL: "auto_trader", compose_plan.SERVICE_LABEL: "app", compose_plan.NUMBER_LABEL: "1",
                compose_plan.ONEOFF_LABEL: "False"}, "Ports": []},
    {"Id": "bbb222", "Names": ["/auto_trader-app-2"], "Image": "auto_trader:1.1.0", "ImageID": "sha256:new",
     "State": "running", "Status": "Up 1 second (health: starting)",
     "Labels": {compose_plan.PROJECT_LABEL: "auto_trader", compose_plan.SERVICE_LABEL: "app", compose_plan.NUMBER_LABEL: "2",
                compose_plan.ONEOFF_LABEL: "False"}, "Ports": []},
    {"Id": "ccc333", "Names": ["/auto_trader-db-1"], "Image": "dbops/postgres:15", "ImageID": "sha256:pg",
     "State": "running", "Status": "Up 5 minutes (healthy)",
     "Labels": {compose_plan.PROJECT_LABEL: "auto_trader", compose_plan.SERVICE_LABEL: "db", compose_plan.NUMBER_LABEL: "1"},
     "Ports": [{"IP": "127.0.0.1", "PrivatePort": 5432, "PublicPort": 55432, "Type": "tcp"}]},
    {"Id": "ddd444", "Names": ["/auto_trader-nginx-1"], "Image": "dbops/nginx:1.22", "ImageID": "sha256:ngx",
     "State": "running", "Status": "Up 5 minutes (healthy)",
     "Labels": {compose_plan.PROJECT_LABEL: "auto_trader", compose_plan.SERVICE_LABEL: "nginx", compose_plan.NUMBER_LABEL: "1"},
     "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]},
    {"Id": "eee555", "Names": ["/auto_trader-migration-run-1"], "Image": "auto_trader:1.0.0",
     "ImageID": "sha256:old", "State": "exited", "Status": "Exited (0) 3 minutes ago",
     "Labels": {compose_plan.PROJECT_LABEL: "auto_trader", compose_plan.SERVICE_LABEL: "migration", compose_plan.ONEOFF_LABEL: "True"}},
    {"Id": "fff666", "Names": ["/other-app-1"], "Image": "x", "State": "running", "Status": "Up",
     "Labels": {compose_plan.PROJECT_LABEL: "other", compose_plan.SERVICE_LABEL: "app"}},
]


@pytest.mark.parametrize("image,repo,tag,digest", [
    ("auto_trader", "auto_trader", "latest", None),
    ("auto_trader:1.1.0", "auto_trader", "1.1.0", None),
    ("registry.local:5000/team/app", "registry.local:5000/team/app", "latest", None),
    ("registry.local:5000/team/app:2", "registry.local:5000/team/app", "2", None),
    ("app@sha256:abc", "app", None, "sha256:abc"),
    ("app:1@sha256:abc", "app", "1", "sha256:abc"),
])
def test_parse_image_ref(image, repo, tag, digest):
    ref = compose_plan.parse_image_ref(image)
    assert (ref.repository, ref.tag, ref.digest) == (repo, tag, digest)
    assert ref.with_tag("backup") == repo + ":backup"


def test_parse_image_ref_rejects_empty():
    with pytest.raises(compose_plan.ComposeError):
        compose_plan.parse_image_ref(" ")


@pytest.mark.parametrize("tag,ok", [("backup", True), ("pre-1.1.0_2", True), ("-x", False), ("a b", False),
                                    ("", False), ("x" * 129, False)])
def test_valid_tag(tag, ok):
    assert compose_plan.valid_tag(tag) is ok


def test_parse_compose_config_reads_services():
    name, specs = compose_plan.parse_compose_config(json.dumps(CONFIG))
    assert name == "auto_trader"
    assert specs["db"].published_ports == ["127.0.0.1:55432"]
    assert specs["db"].has_healthcheck and not specs["app"].has_healthcheck
    assert not specs["worker"].has_healthcheck
    assert specs["migration"].profiles == ["migration"]
    # only the app can run twice: the others publish ports or have a fixed name
    assert [n for n, s in specs.items() if s.surge_capable] == ["app", "migration"]


def test_parse_compose_config_rejects_garbage():
    with pytest.raises(compose_plan.ComposeError):
        compose_plan.parse_compose_config({"version": "3"})


def test_select_services_defaults_to_active_profiles():
    _, specs = compose_plan.parse_compose_config(CONFIG)
    assert compose_plan.select_services(specs, None) == ["db", "app", "nginx", "worker"]
    assert "migration" in compose_plan.select_services(specs, None, active_profiles=["migration"])
    assert compose_plan.select_services(specs, ["app"]) == ["app"]


def test_select_services_unknown_names_list_the_real_ones():
    _, specs = compose_plan.parse_compose_config(CONFIG)
    with pytest.raises(compose_plan.ComposeError) as err:
        compose_plan.select_services(specs, ["app", "web"])
    assert "unknown service web" in str(err.value) and "nginx" in str(err.value)
    with pytest.raises(compose_plan.ComposeError):
        compose_plan.select_services(specs, None, run="migrate")


@pytest.mark.parametrize("status,health", [
    ("Up 3 seconds (health: starting)", "starting"), ("Up 2 minutes (healthy)", "healthy"),
    ("Up 1 minute (unhealthy)", "unhealthy"), ("Up 5 seconds", "none"), ("Exited (1) 2 seconds ago", "none"),
])
def test_health_from_status(status, health):
    assert compose_plan.health_from_status(status) == health


def test_parse_container_list_keeps_only_the_project():
    containers = compose_plan.parse_container_list(HOST_INFO, "auto_trader")
    assert [c.name for c in containers] == ["auto_trader-app-1", "auto_trader-app-2", "auto_trader-db-1",
                                            "auto_trader-migration-run-1", "auto_trader-nginx-1"]
    app2 = containers[1]
    assert (app2.service, app2.number, app2.health, app2.image_id) == ("app", 2, "starting", "sha256:new")
    migration = containers[3]
    assert migration.oneoff and migration.exit_code == 0 and not migration.running
    assert containers[2].ports == ["127.0.0.1:55432"]
    assert "migration" not in compose_plan.by_service(containers)


def test_labels_as_comma_string_from_compose_ps():
    item = {"ID": "x", "Name": "p-app-1", "State": "running", "Status": "Up",
            "Labels": "com.docker.compose.project=p,com.docker.compose.service=app"}
    assert compose_plan.parse_container_list([item], "p")[0].service == "app"


def _containers(*rows):
    return [compose_plan.Container(id=i, name="p-%s-%d" % (svc, n), service=svc, number=n, image=img, image_id=iid,
                         state=state, health=health) for i, svc, n, img, iid, state, health in rows]


def test_services_from_dry_run_maps_container_actions():
    running = _containers(("1", "app", 1, "a:1", "sha256:1", "running", "healthy"))
    actions = [
        {"what": "container", "id": "p-app-1", "status": "Recreate"},
        {"what": "container", "id": "0123456789ab_p-app-1", "status": "Starting"},
        {"what": "container", "id": "p-db-1", "status": "Running"},
        {"what": "container", "id": "p-nginx-1", "status": "Creating"},
        {"what": "network", "id": "p_default", "status": "Creating"},
    ]
    assert compose_plan.services_from_dry_run(actions, "p", running, ["app", "db", "nginx"]) == {
        "app": "recreate", "nginx": "create"}


def test_plan_changes_picks_surge_only_for_single_running_replica():
    _, specs = compose_plan.parse_compose_config(CONFIG)
    running = _containers(("1", "app", 1, "auto_trader:1.0.0", "sha256:old", "running", "healthy"),
                          ("2", "db", 1, "dbops/postgres:15", "sha256:pg", "running", "healthy"))
    plan = compose_plan.plan_changes(specs, ["db", "app", "nginx"], running, {"app": "recreate", "db": "recreate"},
                           {"auto_trader:1.1.0": "sha256:new"})
    by = {c.service: c for c in plan}
    assert by["app"].strategy == "surge" and by["app"].image_changes
    assert by["db"].strategy == "compose"           # publishes a host port
    assert by["nginx"].action == "create"            # not running at all
    no_surge = compose_plan.plan_changes(specs, ["app"], running, {"app": "recreate"}, {}, zero_downtime=False)
    assert no_surge[0].strategy == "compose"


def test_plan_unchanged_when_dry_run_is_quiet():
    _, specs = compose_plan.parse_compose_config(CONFIG)
    running = _containers(("1", "app", 1, "auto_trader:1.1.0", "sha256:new", "running", "healthy"))
    plan = compose_plan.plan_changes(specs, ["app"], running, {}, {"auto_trader:1.1.0": "sha256:new"})
    assert not plan[0].changes and not plan[0].image_changes


def test_render_diff_shows_image_change_per_service():
    change = compose_plan.ServiceChange("app", "recreate", "auto_trader:1.0.0", "sha256:aaaaaaaaaaaaaaaa",
                              "auto_trader:1.1.0", "sha256:bbbbbbbbbbbbbbbb", "surge")
    same = compose_plan.ServiceChange("db", "unchanged", "dbops/postgres:15", "sha256:cccccccccccccc",
                            "dbops/postgres:15", "sha256:cccccccccccccc")
    diff = compose_plan.render_diff([change, same])
    assert "app: auto_trader:1.0.0 (aaaaaaaaaaaa)" in diff["before"]
    assert "app: auto_trader:1.1.0 (bbbbbbbbbbbb)" in diff["after"]
    assert "db: dbops/postgres:15" in diff["after"]


def test_backup_targets_name_the_project_and_the_release_they_replaced():
    plan = [compose_plan.ServiceChange("app", "recreate", "auto_trader:1.0.0", "sha256:old", "auto_trader:1.1.0", None),
            compose_plan.ServiceChange("worker", "recreate", "auto_trader:1.0.0", "sha256:old", "auto_trader:1.1.0", None),
            compose_plan.ServiceChange("nginx", "create", None, None, "dbops/nginx:1.22", "sha256:n"),
            compose_plan.ServiceChange("db", "unchanged", "pg:15", "sha256:pg", "pg:15", "sha256:pg"),
            compose_plan.ServiceChange("proxy", "recreate", "ngx:1", "sha256:n1", "ngx:1", "sha256:n1")]
    targets = compose_plan.backup_targets(plan, "dbops-rollback", "shop")
    assert targets == [{"service": "app", "image_id": "sha256:old", "source": "auto_trader:1.0.0",
                        "backup": "auto_trader:dbops-rollback-shop.1.0.0", "replaced": "auto_trader:1.0.0"}]
    assert compose_plan.backup_images_result(targets) == {"app": {"image": "auto_trader:dbops-rollback-shop.1.0.0",
                                                        "id": "sha256:old", "replaced": "auto_trader:1.0.0"}}


def test_backup_targets_never_name_a_release_tag():
    latest = compose_plan.backup_targets([compose_plan.ServiceChange("app", "recreate", "a:latest", "sha256:1", "a", "sha256:2")],
                               "dbops-rollback", "p")
    assert latest[0]["backup"] == "a:dbops-rollback-p.latest"
    # the running container shows a bare id once its tag moved: the backup names the short id
    moved = compose_plan.backup_targets([compose_plan.ServiceChange("app", "recreate", "sha256:0123456789abcdef", "sha256:0123456789abcdef",
                                                "reg:5000/a:2", None)], "dbops-rollback", "p")
    assert moved[0]["backup"] == "reg:5000/a:dbops-rollback-p.0123456789ab"
    assert moved[0]["replaced"] == "0123456789ab"
    # after a rollback the running image is a backup already: it keeps its name
    again = compose_plan.backup_targets([compose_plan.ServiceChange("app", "recreate", "a:dbops-rollback-p.1", "sha256:1", "a:2", None)],
                              "dbops-rollback", "p")
    assert again[0]["backup"] == "a:dbops-rollback-p.1"


@pytest.mark.parametrize("project,replaced,expected", [
    ("shop", "repo:1.0.0", "dbops-rollback-shop.1.0.0"),
    ("shop eu", "repo:1.0+build", "dbops-rollback-shop-eu.1.0-build"),
    ("p", "repo@sha256:abcdef0123456789", "dbops-rollback-p.abcdef012345"),
    ("p", None, "dbops-rollback-p.feedbeef0000"),
])
def test_backup_tag_name_is_always_a_valid_tag(project, replaced, expected):
    tag = compose_plan.backup_tag_name("dbops-rollback", project, replaced, "sha256:feedbeef0000aaaa")
    assert tag == expected and compose_plan.valid_tag(tag)
    assert compose_plan.valid_tag(compose_plan.backup_tag_name("x", "p" * 200, "r:1", None))


def test_a_project_never_claims_the_backups_of_a_project_whose_name_starts_like_it():
    # compose project names hold letters, digits, '-' and '_', never '.', so the dot ends the name
    shop_eu = compose_plan.backup_tag_name("dbops-rollback", "shop-eu", "repo:1.0.0", None)
    shop = compose_plan.backup_tag_name("dbops-rollback", "shop", "repo:1.0.0", None)
    assert shop.startswith(compose_plan.backup_prefix("dbops-rollback", "shop"))
    assert not shop_eu.startswith(compose_plan.backup_prefix("dbops-rollback", "shop"))
    assert not shop.startswith(compose_plan.backup_prefix("dbops-rollback", "shop-eu"))


def test_choose_rollback_image_takes_the_newest_backup_that_does_not_run():
    candidates = [{"tag": "b-p-1", "ref": "r:b-p-1", "id": "sha256:1", "tagged_at": "2026-01-01T10:00:00Z"},
                  {"tag": "b-p-2", "ref": "r:b-p-2", "id": "sha256:2", "tagged_at": "2026-01-02T10:00:00Z"}]
    assert compose_plan.choose_rollback_image(candidates, "sha256:3")["tag"] == "b-p-2"
    assert compose_plan.choose_rollback_image(candidates, "sha256:2")["tag"] == "b-p-1"
    assert compose_plan.choose_rollback_image(candidates, "sha256:2", wanted_tag="b-p-2")["id"] == "sha256:2"
    assert compose_plan.choose_rollback_image(candidates[:1], "sha256:1") is None
    assert compose_plan.choose_rollback_image([], None) is None


@pytest.mark.parametrize("image,tags,shown", [
    ("repo:2", ["repo:2", "repo:latest"], "repo:2"),
    ("sha256:aaaaaaaaaaaaaaaa", ["repo:1"], "repo:1"),
    ("repo:dbops-rollback-p.1", ["repo:1", "repo:dbops-rollback-p.1"], "repo:1"),
    ("repo:dbops-rollback-p.1", ["repo:dbops-rollback-p.1"], "repo:dbops-rollback-p.1"),
    ("my/repo:dbops-rollback-p.1", ["base:1.0.0", "my/repo:1", "my/repo:dbops-rollback-p.1"], "my/repo:1"),
    ("sha256:aaaaaaaaaaaaaaaa", [], "aaaaaaaaaaaa"),
])
def test_display_image_names_what_runs_with_a_tag(image, tags, shown):
    assert compose_plan.display_image(image, "sha256:aaaaaaaaaaaaaaaa", tags) == shown


NGINX_RESOLVING = """
resolver 127.0.0.11 valid=1s ipv6=off;
server {
    set $app_upstream http://app:8000;   # proxy_pass http://db:5432; in a comment
    location / { proxy_pass $app_upstream; }
}
"""
NGINX_CACHING = """
server {
    listen 80;
    location / {
        proxy_pass http://api:5000;
        proxy_pass_header Server;
    }
}
"""
NGINX_UPSTREAM = """
upstream backend { server api:5000 max_fails=0; }
server { location / { proxy_pass http://backend/; } }
"""


@pytest.mark.parametrize("config,mode,upstreams", [
    (NGINX_RESOLVING, "resolving", ["app"]),
    (NGINX_CACHING, "caching", ["api"]),
    (NGINX_UPSTREAM, "caching", ["api"]),
    ("server { location / { proxy_pass $up; } set $up http://app:8000; }", "caching", ["app"]),
    ("server { location / { root /srv; } }", "none", []),
])
def test_classify_proxy(config, mode, upstreams):
    found = compose_plan.classify_proxy(config, ["app", "api", "db"])
    assert (found["mode"], found["upstreams"]) == (mode, upstreams)


def test_in_place_problem_is_said_before_the_release():
    specs = compose_plan.parse_compose_config(CONFIG)[1]
    specs["app"].published_ports = ["127.0.0.1:5000"]
    plan = [compose_plan.ServiceChange("app", "recreate", "a:1", "sha256:1", "a:2", "sha256:2", strategy="compose"),
            compose_plan.ServiceChange("db", "recreate", "pg:15", "sha256:p", "pg:16", None, strategy="compose")]
    msg = compose_plan.in_place_problem(plan, specs, ["app"], "none")
    assert "app publishes host port 127.0.0.1:5000" in msg and "allow_in_place=true" in msg
    assert "Nothing was changed" in msg and "db" not in msg.split(":", 1)[1].split(".")[0]
    surge = [compose_plan.ServiceChange("app", "recreate", "a:1", "sha256:1", "a:2", "sha256:2", strategy="surge")]
    assert compose_plan.in_place_problem(surge, specs, ["app"], "caching") is None
    assert compose_plan.in_place_problem(plan, specs, [], "none") is None


def test_evaluate_containers_ok_pending_failed():
    _, specs = compose_plan.parse_compose_config(CONFIG)
    good = _containers(("1", "app", 1, "", "", "running", "healthy"), ("2", "db", 1, "", "", "running", "none"))
    assert compose_plan.evaluate_containers(good, ["app", "db"], specs).state == "ok"
    starting = _containers(("1", "app", 1, "", "", "running", "starting"))
    verdict = compose_plan.evaluate_containers(starting, ["app"], specs)
    assert verdict.state == "pending" and verdict.check == "container"
    sick = _containers(("1", "app", 1, "", "", "running", "unhealthy"))
    assert compose_plan.evaluate_containers(sick, ["app"], specs).check == "container"
    dead = [compose_plan.Container("1", "p-app-1", "app", 1, "", "", "exited", "none", exit_code=3)]
    verdict = compose_plan.evaluate_containers(dead, ["app"], specs)
    assert verdict.state == "failed" and verdict.check == "exited" and "exit code 3" in verdict.reason
    assert compose_plan.evaluate_containers([], ["app"], specs).state == "failed"
    # the old container is excluded while the new one is judged
    mixed = _containers(("old", "app", 1, "", "", "running", "healthy"), ("new", "app", 2, "", "", "exited", "none"))
    assert compose_plan.evaluate_containers(mixed, ["app"], specs, exclude_ids=["new"]).state == "ok"
    assert compose_plan.evaluate_containers(mixed, ["app"], specs, exclude_ids=["old"]).state == "failed"


def test_url_gate_needs_consecutive_successes():
    gate = compose_plan.UrlGate(3)
    assert not gate.record(200, True)
    assert not gate.record(200, True)
    assert not gate.record(500, False)
    assert "HTTP 500" in gate.describe("http://x/healthz")
    for _ in range(3):
        gate.record(200, True)
    assert gate.passed
    gate.record(None, False, "ConnectionRefusedError")
    assert "did not answer" in gate.describe("http://x")


@pytest.mark.parametrize("text,expected", [
    ("Error response from daemon: driver failed programming external connectivity on endpoint p-nginx-1: "
     "Bind for 127.0.0.1:8080 failed: port is already allocated", "127.0.0.1:8080 is already in use"),
    ("Error starting userland proxy: listen tcp4 127.0.0.1:18080: bind: address already in use",
     "127.0.0.1:18080 is already in use"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     "not reachable"),
    ("no such service: web", "unknown service web"),
    ("Error response from daemon: pull access denied for nope, repository does not exist",
     "neither present locally nor pullable"),
])
def test_explain_compose_failure(text, expected):
    assert expected in compose_plan.explain_compose_failure(text)


def test_explain_config_failure_says_what_to_do():
    msg = compose_plan.explain_config_failure("yaml: line 3: mapping values are not allowed in this context")
    assert "line 3" in msg and "docker compose config" in msg


def test_ports_owned_by_the_replaced_service_are_not_conflicts():
    containers = compose_plan.parse_container_list(HOST_INFO, "auto_trader")
    assert compose_plan.ports_owned_by("127.0.0.1:8080", "nginx", containers)
    assert not compose_plan.ports_owned_by("127.0.0.1:8080", "app", containers)
    msg = compose_plan.port_conflict_message({"127.0.0.1:8080": "nginx"})
    assert "127.0.0.1:8080 (service nginx)" in msg and "nothing was changed" in msg


def test_compose_argv_resolves_relative_files():
    argv = project_argv("docker", "/srv/app/", "p", ["docker-compose.prod.yml", "/etc/extra.yml"],
                        ["/tmp/x/deploy.env"], ["migration"], "config")
    assert argv == ["docker", "compose", "--project-directory", "/srv/app", "-p", "p",
                    "-f", "/srv/app/docker-compose.prod.yml", "-f", "/etc/extra.yml",
                    "--env-file", "/tmp/x/deploy.env", "--profile", "migration", "config"]


def test_tail_lines():
    assert compose_plan.tail_lines("a\n\nb\nc\n", 2) == ["b", "c"]
    assert compose_plan.tail_lines("a", 0) == []


def test_env_file_is_private_and_keeps_dollars(tmp_path, monkeypatch):
    monkeypatch.setattr(engine.tempfile, "tempdir", str(tmp_path))
    directory, path = engine.write_env_file({"POSTGRES_PASSWORD": "pa$$word", "APP_VERSION": "1.1.0",
                                             "QUOTE": "it's"})
    import os
    import stat
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    text = open(path).read()
    assert "POSTGRES_PASSWORD='pa$$word'\n" in text and "QUOTE=it's\n" in text
    with pytest.raises(compose_plan.ComposeError):
        engine.write_env_file({"BAD": "a\nb"})


class FakeApi:
    """Stands in for docker.APIClient.containers(): a scripted sequence of snapshots."""

    def __init__(self, snapshots):
        self.snapshots = list(snapshots)

    def containers(self, all, filters):  # noqa: A002 (SDK signature)
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]


class FakeClient:
    def __init__(self, snapshots):
        self.api = FakeApi(snapshots)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _item(cid, status, state="running", service="app"):
    return {"Id": cid, "Names": ["/p-%s-1" % service], "Image": "a", "ImageID": "sha256:a", "State": state,
            "Status": status, "Labels": {compose_plan.PROJECT_LABEL: "p", compose_plan.SERVICE_LABEL: service}}


def _specs():
    return {"app": compose_plan.ServiceSpec("app", "a", True, [], None, [], 1, False)}


def test_wait_healthy_waits_through_starting_then_settles():
    clock = Clock()
    client = FakeClient([[_item("n", "Up (health: starting)")]] * 3 + [[_item("n", "Up (healthy)")]])
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=30, interval=1, settle=2,
                                  clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "ok" and verdict["waited_s"] >= 5


def test_wait_healthy_times_out_when_never_healthy():
    clock = Clock()
    client = FakeClient([[_item("n", "Up (health: starting)")]])
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=10, interval=1,
                                  clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "failed" and verdict["check"] == "container" and "after 10s" in verdict["reason"]


def test_wait_healthy_catches_a_crash_during_settle():
    clock = Clock()
    client = FakeClient([[_item("n", "Up (healthy)")]] * 3 + [[_item("n", "Exited (3) 1 second ago", "exited")]])
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=60, interval=1, settle=10,
                                  clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "failed" and verdict["check"] == "exited" and "exit code 3" in verdict["reason"]


def test_wait_healthy_url_must_answer_in_a_row():
    clock = Clock()
    client = FakeClient([[_item("n", "Up (healthy)")]])
    answers = iter([(200, ""), (500, ""), (200, ""), (200, ""), (200, "")])
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=60, interval=1, url="http://x",
                                  successes=3, fetch=lambda url, t: next(answers), clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "ok" and verdict["url_status"] == 200
    clock = Clock()
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=5, interval=1, url="http://x",
                                  successes=3, fetch=lambda url, t: (500, ""), clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "failed" and verdict["check"] == "url" and "HTTP 500" in verdict["reason"]


def test_wait_healthy_notices_a_vanished_container():
    clock = Clock()
    client = FakeClient([[_item("other", "Up (healthy)")]])
    verdict = engine.wait_healthy(client, "p", _specs(), ["app"], timeout=5, interval=1, watch_ids=["gone1234"],
                                  clock=clock, sleep=clock.sleep)
    assert verdict["state"] == "failed" and "disappeared" in verdict["reason"]


@pytest.mark.parametrize("text", [
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
    "Error connecting: Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2))",
    "the Docker engine is not reachable (boom); start it",
])
def test_engine_unreachable_is_recognised(text):
    assert compose_plan.engine_unreachable(text)


@pytest.mark.parametrize("text", ["no such service: web", "container app exited with code 3", "",
                                  "pull registry.example:5000/app: connection refused"])
def test_other_failures_are_not_an_engine_loss(text):
    assert not compose_plan.engine_unreachable(text)


def test_engine_lost_message_says_what_to_run_next():
    msg = compose_plan.engine_lost_message("the Docker engine is not reachable (refused).", "surge app",
                                 ["repo/app:backup"], during_rollback=False)
    assert "during the release (last step: surge app)" in msg
    assert "nothing was rolled back" in msg
    assert "run this task again" in msg and "rollback=true to bring back repo/app:backup" in msg
    assert ".." not in msg


def test_engine_lost_during_rollback_does_not_claim_nothing_was_rolled_back():
    msg = compose_plan.engine_lost_message("gone", None, [], during_rollback=True)
    assert "while rolling back (last step: start)" in msg and "nothing was rolled back" not in msg
    assert "rollback=true" not in msg


@pytest.mark.parametrize("aliases, hidden", [
    ({"p_default": ["p-app-2", "app", "abc123"]}, False),
    ({"p_default": ["p-app-2", "abc123"]}, True),
    ({"p_default": ["p-app-2"], "p_backend": ["app"]}, False),
    ({"p_default": None}, True),
    ({}, False),  # host networking or no network: nothing to tell
])
def test_hidden_means_attached_without_the_service_name(aliases, hidden):
    assert compose_plan.hidden_from_service("app", aliases) is hidden


@pytest.mark.parametrize("name,suggested", [
    ("auto_trader", None),
    ("prod-1", None),
    ("Auto Trader", "auto-trader"),
    ("it's $(touch x); a=b", "it-s-touch-x-a-b"),
    ("_hidden", "hidden"),
    ("!!!", "app"),
])
def test_project_name_problem_says_what_compose_accepts(name, suggested):
    problem = compose_plan.project_name_problem(name)
    if suggested is None:
        assert problem is None
    else:
        assert "not a compose project name" in problem and repr(suggested) in problem
        assert compose_plan.project_name_problem(suggested) is None


@pytest.mark.parametrize("resolvers, seconds", [
    (["127.0.0.11 valid=1s ipv6=off"], 1.0),
    (["127.0.0.11 valid=30"], 30.0),
    (["127.0.0.11 valid=500ms"], 0.5),
    (["127.0.0.11 valid=2m", "10.0.0.2 valid=5s"], 120.0),
    (["127.0.0.11"], None),  # nginx keeps the answer for its TTL
    ([], None),
])
def test_resolver_validity_reads_nginx_time_units(resolvers, seconds):
    assert compose_plan.resolver_validity(resolvers) == seconds


def test_classify_proxy_reports_how_long_nginx_keeps_an_address():
    config = ("resolver 127.0.0.11 valid=3s ipv6=off;\nserver { set $up http://app:8000; "
              "location / { proxy_pass $up; } }")
    found = compose_plan.classify_proxy(config, ["app"])
    assert (found["mode"], found["resolver_valid_s"]) == ("resolving", 3.0)
    assert compose_plan.classify_proxy("server { location / { proxy_pass http://app:8000; } }",
                                       ["app"])["resolver_valid_s"] is None


@pytest.mark.parametrize("drain, proxy, reloaded, wait", [
    (2.0, None, False, 2.0),                                                    # no proxy option: drain_seconds
    (2.0, {"mode": "resolving", "resolver_valid_s": 1.0, "drain": 2.0}, False, 2.0),
    (2.0, {"mode": "resolving", "resolver_valid_s": 5.0, "drain": 2.0}, False, 6.0),  # validity + in flight
    (2.0, {"mode": "resolving", "resolver_valid_s": None, "drain": 2.0}, False, 2.0),
    (1.0, {"mode": "caching", "resolver_valid_s": None, "drain": 3.0}, True, 3.0),    # old workers finish
    (1.0, {"mode": "caching", "resolver_valid_s": None, "drain": 3.0}, False, 1.0),
    (0.0, None, False, 0.0),
    (-1.0, None, False, 0.0),
])
def test_retire_wait_covers_dns_caches_and_requests_in_flight(drain, proxy, reloaded, wait):
    assert compose_plan.retire_wait(drain, proxy, reloaded) == wait


def test_project_argv_is_the_same_for_both_clis_but_the_subcommand():
    plugin = project_argv("docker", "/srv/app", None, ["c.yml"], None, ["migration"], "run", "--rm", "migration")
    standalone = project_argv("docker-compose", "/srv/app", None, ["c.yml"], None, ["migration"], "run", "--rm",
                              "migration", standalone=True)
    assert plugin[:2] == ["docker", "compose"] and standalone[:1] == ["docker-compose"]
    assert plugin[2:] == standalone[1:] == ["--project-directory", "/srv/app", "-f", "/srv/app/c.yml",
                                            "--profile", "migration", "run", "--rm", "migration"]


def test_project_argv_without_a_project_folder_keeps_files_as_given():
    assert project_argv("docker", None, "p", ["c.yml"], [], []) == ["docker", "compose", "-p", "p", "-f", "c.yml"]


HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n172.18.0.4\t3f2a9c1d\n"


def test_a_pin_names_only_the_addresses_that_stay_and_replaces_earlier_pins():
    once = compose_plan.hosts_with_pin(HOSTS, "app", ["172.18.0.7"])
    assert once == HOSTS + "172.18.0.7\tapp\t%s\n" % compose_plan.HOSTS_PIN_MARK
    again = compose_plan.hosts_with_pin(once, "app", ["172.18.0.9"])
    assert again == HOSTS + "172.18.0.9\tapp\t%s\n" % compose_plan.HOSTS_PIN_MARK


def test_a_pin_goes_on_its_own_line_when_the_file_has_no_final_newline():
    pinned = compose_plan.hosts_with_pin("127.0.0.1 localhost", "api", ["10.0.0.2", "10.0.0.3"])
    assert pinned.splitlines() == ["127.0.0.1 localhost", "10.0.0.2\tapi\t%s" % compose_plan.HOSTS_PIN_MARK,
                                   "10.0.0.3\tapi\t%s" % compose_plan.HOSTS_PIN_MARK]


def test_removing_pins_keeps_every_other_line_and_says_what_went():
    pinned = compose_plan.hosts_with_pin(HOSTS, "app", ["172.18.0.7"])
    text, removed = compose_plan.hosts_without_pins(pinned)
    assert text == HOSTS and removed == ["172.18.0.7\tapp\t%s" % compose_plan.HOSTS_PIN_MARK]
    assert compose_plan.hosts_without_pins(text) == (HOSTS, [])  # twice removes nothing more


@pytest.mark.parametrize("name", ["", "app\n10.0.0.1 db", "app db", "-app", "app;rm"])
def test_a_pin_refuses_anything_but_a_host_name(name):
    with pytest.raises(ValueError):
        compose_plan.hosts_with_pin(HOSTS, name, ["10.0.0.1"])


def test_resolved_addresses_reads_getent_ahostsv4_once_per_address():
    output = ("172.18.0.7      STREAM app\n172.18.0.7      DGRAM  \n172.18.0.7      RAW    \n"
              "172.18.0.8      STREAM \n172.18.0.8      DGRAM  \n")
    assert compose_plan.resolved_addresses(output, "app") == ["172.18.0.7", "172.18.0.8"]
    assert compose_plan.resolved_addresses("", "app") == []


class ExecApi:
    """exec_create/exec_start/exec_inspect and inspect_container of a proxy container."""

    def __init__(self, answers, networks):
        self.answers, self.networks, self.calls = list(answers), networks, []

    def exec_create(self, container, cmd, stdout=True, stderr=True, environment=None):
        self.calls.append((cmd, environment))
        return {"Id": str(len(self.calls))}

    def exec_start(self, exec_id):
        return self.answers[int(exec_id) - 1][1].encode()

    def exec_inspect(self, exec_id):
        return {"ExitCode": self.answers[int(exec_id) - 1][0]}

    def inspect_container(self, container_id):
        return {"NetworkSettings": {"Networks": self.networks[container_id]}}


def test_the_hosts_file_is_written_in_place_with_the_text_outside_argv():
    api = ExecApi([(0, "")], {})
    engine.write_hosts(type("C", (), {"api": api})(), "proxy", "10.0.0.2\tapp\n")
    [(argv, environment)] = api.calls
    assert "10.0.0.2" not in " ".join(argv) and environment == {"DBOPS_HOSTS": "10.0.0.2\tapp\n"}
    assert "> /etc/hosts" in argv[-1] and "mv" not in argv[-1]  # a bind mount cannot be renamed over


def test_resolve_in_says_none_when_the_proxy_has_no_getent():
    api = ExecApi([(127, "exec: \"getent\": executable file not found in $PATH")], {})
    assert engine.resolve_in(type("C", (), {"api": api})(), "proxy", "app") is None


def test_the_addresses_a_proxy_reaches_are_those_on_its_networks():
    networks = {"proxy": {"front": {"IPAddress": "172.18.0.2"}},
                "new": {"back": {"IPAddress": "172.19.0.5"}, "front": {"IPAddress": "172.18.0.5"}}}
    client = type("C", (), {"api": ExecApi([], networks)})()
    assert engine.addresses_seen_by(client, "proxy", ["new"]) == ["172.18.0.5"]
    assert engine.addresses_seen_by(client, "proxy", []) == []
