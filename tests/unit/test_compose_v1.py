"""Pure logic of compose_deploy on docker-compose v1: choice, argv, config, plan, output."""
from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan
from ansible_collections.dbops.migrations.plugins.module_utils.compose import engine
from ansible_collections.dbops.migrations.plugins.module_utils.compose import v1 as compose_v1
from ansible_collections.dbops.migrations.plugins.module_utils.compose.command import project_argv

# Recorded from `docker-compose -p p -f docker-compose.prod.yml config` (1.29.2), secrets replaced.
CONFIG_YAML = """services:
  app:
    depends_on:
      db:
        condition: service_healthy
    environment:
      DATABASE_URL: postgresql://auto_trader:x@db:5432/auto_trader
    image: auto_trader:latest
    restart: unless-stopped
    stop_grace_period: 20s
  db:
    environment:
      POSTGRES_DB: auto_trader
      POSTGRES_PASSWORD: x
      POSTGRES_USER: auto_trader
    healthcheck:
      interval: 2s
      retries: 30
      test:
      - CMD-SHELL
      - pg_isready -U "$${POSTGRES_USER}" -d "$${POSTGRES_DB}" -h 127.0.0.1
      timeout: 3s
    image: dbops/postgres:15
    ports:
    - 127.0.0.1:55432:5432/tcp
    restart: unless-stopped
    volumes:
    - db_data:/var/lib/postgresql/data:rw
  migration:
    command:
    - alembic
    - upgrade
    - head
    depends_on:
      db:
        condition: service_healthy
    environment:
      DATABASE_URL: postgresql://auto_trader:x@db:5432/auto_trader
      PGOPTIONS: ''
    image: auto_trader:latest
    profiles:
    - migration
    restart: "no"
  nginx:
    depends_on:
      app:
        condition: service_started
    healthcheck:
      interval: 5s
      retries: 3
      test:
      - CMD-SHELL
      - nginx -t -q || exit 1
      timeout: 3s
    image: dbops/nginx:1.22
    ports:
    - 127.0.0.1:8080:80/tcp
    restart: unless-stopped
    volumes:
    - /srv/auto_trader/nginx/default.conf:/etc/nginx/conf.d/default.conf:ro
    - nginx_dbops:/etc/nginx/dbops:rw
version: '3.9'
volumes:
  db_data: {}
  nginx_dbops: {}
"""

HASHES = {"db": "c1fd1db013589a4a0dba886330fb183a83c664660824316289e9c5973f615b9f",
          "app": "2bce0f33c530b731c19f2d5777e2a51890a9d285794abe2c3f3a69c43de78972",
          "nginx": "dfdc015111df1f1a314f443019760d1d522b926e0922891dd1f2840c7e5b7a0a",
          "migration": "0f0e914e74eb3ae64eb9c6d56a3de5ce1f7ac8a588308062d56f2397da0e570c"}
HASH_OUTPUT = "".join("%s %s\n" % item for item in HASHES.items())

# Recorded stderr of `docker-compose up -d` on a fresh project, of an update, and of `down`.
UP_FRESH = """Creating network "p_default" with the default driver
Creating volume "p_db_data" with default driver
Creating p_db_1 ...
Creating p_db_1 ... done
Creating p_app_1 ...
Creating p_app_1 ... done
Creating p_nginx_1 ...
Creating p_nginx_1 ... done
"""
UP_UPDATE = """p_db_1 is up-to-date
Recreating p_app_1 ...
Recreating p_app_1 ... done
p_nginx_1 is up-to-date
"""
UP_NOTHING = """p_db_1 is up-to-date
p_app_2 is up-to-date
p_nginx_1 is up-to-date
"""
UP_PORT_TAKEN = """Creating p_nginx_1 ...
Creating p_nginx_1 ... error

ERROR: for p_nginx_1  Cannot start service nginx: driver failed programming external connectivity on endpoint \
p_nginx_1 (0e3c): Bind for 127.0.0.1:8080 failed: port is already allocated
ERROR: Encountered errors while bringing up the project.
"""
DOWN = """Stopping p_app_2   ... done
Stopping p_db_1    ... done
Removing p_app_2   ... done
Removing p_db_1    ... done
Removing network p_default
"""


def container(service, state="running", config_hash=None, oneoff=False, name=None):
    return compose_plan.Container(id=(name or service) + "-id", name=name or "p_%s_1" % service, service=service, number=1,
                        image="x", image_id="sha256:x", state=state, health="none", oneoff=oneoff,
                        config_hash=config_hash if config_hash is not None else HASHES.get(service))


# --------------------------------------------------------------------------- which compose


@pytest.mark.parametrize("requested,plugin,standalone,kind,label", [
    ("auto", "2.26.1-4", None, "plugin", "docker compose 2.26.1-4"),
    ("auto", "v2.18.0", "1.29.2", "plugin", "docker compose 2.18.0"),
    ("auto", None, "1.29.2", "standalone", "docker-compose 1.29.2"),
    ("auto", "2.17.3", "1.29.2", "standalone", "docker-compose 1.29.2"),   # plugin too old: v1
    ("plugin", "2.26.1", "1.29.2", "plugin", "docker compose 2.26.1"),
    ("standalone", "2.26.1", "1.29.2", "standalone", "docker-compose 1.29.2"),
    ("standalone", None, "1.28.0", "standalone", "docker-compose 1.28.0"),
])
def test_choose_compose(requested, plugin, standalone, kind, label):
    choice = compose_v1.choose_compose(requested, plugin, "docker: 'compose' is not a docker command.", standalone)
    assert (choice.kind, choice.label) == (kind, label)


@pytest.mark.parametrize("requested,plugin,standalone,says", [
    # nothing at all: the existing error, naming both ways out
    ("auto", None, None, ["docker compose v2 is not available", "'compose' is not a docker command",
                          "docker-compose-plugin, 2.18", "docker-compose 1.28"]),
    ("auto", "2.17.3", None, ["docker compose 2.17.3 is too old; 2.18 or newer is needed", "docker-compose 1.28"]),
    ("auto", None, "1.26.2", ["docker-compose 1.26.2 is too old", "profiles", "docker-compose-plugin"]),
    ("auto", None, "1.27.4", ["docker-compose 1.27.4 is too old"]),
    ("plugin", None, "1.29.2", ["docker compose v2 is not available", "compose_command=standalone",
                                "docker-compose-plugin"]),
    ("plugin", "2.10.0", None, ["docker compose 2.10.0 is too old"]),
    ("standalone", "2.26.1", None, ["compose_command=standalone: docker-compose v1 is not installed",
                                    "apt-get install docker-compose", "compose_command=auto"]),
    ("standalone", None, "1.25.0", ["docker-compose 1.25.0 is too old", "1.28"]),
])
def test_choose_compose_says_what_to_install(requested, plugin, standalone, says):
    with pytest.raises(compose_plan.ComposeError) as err:
        compose_v1.choose_compose(requested, plugin, "docker: 'compose' is not a docker command.", standalone)
    for part in says:
        assert part in str(err.value)


def test_choose_compose_reports_a_broken_docker_compose():
    with pytest.raises(compose_plan.ComposeError) as err:
        compose_v1.choose_compose("auto", None, "no plugin", None, "ImportError: No module named compose")
    assert "`docker-compose version` failed: ImportError" in str(err.value)


def test_choose_compose_rejects_unknown_request():
    with pytest.raises(compose_plan.ComposeError):
        compose_v1.choose_compose("v1", "2.26.1", "", None)


@pytest.mark.parametrize("text,version", [("1.29.2", (1, 29, 2)), ("v2.26.1-4", (2, 26, 1)),
                                          ("docker-compose version 1.25.0, build unknown", (1, 25, 0)),
                                          ("2.18", (2, 18, 0)), ("", None), (None, None)])
def test_parse_version(text, version):
    assert compose_v1.parse_version(text) == version


def test_pull_policy_is_refused_on_v1():
    assert "pull_policy" in compose_v1.unsupported_options("policy")
    assert compose_v1.unsupported_options("missing") is None and compose_v1.unsupported_options("never") is None


# --------------------------------------------------------------------------- project, env, argv


@pytest.mark.parametrize("requested,env,dotenv,expected", [
    ("dbops-v1-ab12", {}, "", "dbops-v1-ab12"),
    ("My.Project_1", {}, "", "myproject_1"),
    (None, {}, "", "auto_trader"),
    (None, {"COMPOSE_PROJECT_NAME": "fromenv"}, "COMPOSE_PROJECT_NAME=dotenv", "fromenv"),
    (None, {}, "# c\nexport COMPOSE_PROJECT_NAME='Dot_Env'\n", "dot_env"),
])
def test_project_name(requested, env, dotenv, expected):
    assert compose_v1.project_name(requested, "/srv/auto_trader/", env, dotenv) == expected


def test_project_name_without_letters_is_an_error():
    with pytest.raises(compose_plan.ComposeError):
        compose_v1.project_name("...", "/srv/x")


def test_merged_env_text_puts_the_task_env_last_and_quotes_values():
    text = compose_v1.merged_env_text("APP_VERSION=0.9\nDB_PORT=5432", {"APP_VERSION": "1.1.0", "PW": "pa$$", "Q": "it's"})
    assert text == "APP_VERSION=0.9\nDB_PORT=5432\nAPP_VERSION='1.1.0'\nPW='pa$$'\nQ=it's\n"
    assert compose_v1.dotenv_value(text, "APP_VERSION") == "1.1.0"
    with pytest.raises(compose_plan.ComposeError):
        compose_v1.merged_env_text("", {"BAD": "a\nb"})


def test_env_file_for_v1_is_private_and_merged(tmp_path):
    directory, path = engine.write_env_file({"POSTGRES_PASSWORD": "secret"}, "COMPOSE_PROJECT_NAME=x\n")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as handle:
            assert handle.read() == "COMPOSE_PROJECT_NAME=x\nPOSTGRES_PASSWORD='secret'\n"
    finally:
        os.remove(path)
        os.rmdir(directory)


def test_argv_has_global_options_and_no_shell():
    argv = project_argv("/usr/bin/docker-compose", "/srv/app/", "p", ["docker-compose.prod.yml", "/tmp/o.yml"],
                        ["/tmp/dbops-compose-x/deploy.env"], ["migration"], *compose_v1.up_args(["app"], "never"),
                        standalone=True)
    assert argv == ["/usr/bin/docker-compose", "--project-directory", "/srv/app", "-p", "p",
                    "-f", "/srv/app/docker-compose.prod.yml", "-f", "/tmp/o.yml",
                    "--env-file", "/tmp/dbops-compose-x/deploy.env", "--profile", "migration",
                    "up", "-d", "--no-color", "--no-build", "--", "app"]


def test_argv_refuses_what_v1_cannot_take():
    with pytest.raises(compose_plan.ComposeError):
        project_argv("dc", "/srv", "p", None, ["/a.env", "/b.env"], [], standalone=True)
    with pytest.raises(compose_plan.ComposeError):
        project_argv("dc", "/srv", "p", None, [], ["*"], standalone=True)


@pytest.mark.parametrize("args,expected", [
    (compose_v1.up_args(None, "policy"), ["up", "-d", "--no-color"]),
    (compose_v1.up_args(["app", "nginx"], "always"), ["up", "-d", "--no-color", "--build", "--", "app", "nginx"]),
    (compose_v1.surge_args("app", 2, "never"), ["up", "--no-start", "--no-recreate", "--no-deps", "--scale", "app=2",
                                         "--no-build", "--", "app"]),
    (compose_v1.run_args("migration", ["alembic", "downgrade", "-1"]),
     ["run", "--rm", "-T", "--", "migration", "alembic", "downgrade", "-1"]),
    (compose_v1.run_args("migration", None), ["run", "--rm", "-T", "--", "migration"]),
    (compose_v1.down_args(True), ["down", "--volumes"]),
    (compose_v1.down_args(False), ["down"]),
    (compose_v1.restart_args(["app"]), ["restart", "--", "app"]),
    (compose_v1.restart_args(None), ["restart"]),
    (compose_v1.pull_args(["app"]), ["pull", "--", "app"]),
    (compose_v1.hash_args(["db", "app"]), ["config", "--hash=db,app"]),
])
def test_subcommand_args(args, expected):
    assert args == expected


# --------------------------------------------------------------------------- config


def test_parse_config_reads_services_and_dependencies():
    specs, deps = compose_v1.parse_config(CONFIG_YAML)
    assert sorted(specs) == ["app", "db", "migration", "nginx"]
    assert specs["db"].published_ports == ["127.0.0.1:55432"] and specs["db"].has_healthcheck
    assert specs["migration"].profiles == ["migration"]
    assert [n for n, s in specs.items() if s.surge_capable] == ["app", "migration"]
    assert deps == {"app": ["db"], "db": [], "migration": ["db"], "nginx": ["app"]}


@pytest.mark.parametrize("text", ["services: [", "just text", "version: '3'\n"])
def test_parse_config_rejects_garbage(text):
    with pytest.raises(compose_plan.ComposeError):
        compose_v1.parse_config(text)


def test_dependencies_cover_links_volumes_from_and_network_mode():
    raw = {"depends_on": ["db"], "links": ["cache:redis", "ghost"], "volumes_from": ["data:ro", "container:x"],
           "network_mode": "service:vpn"}
    assert compose_v1.dependencies(raw, {"db", "cache", "data", "vpn"}) == ["db", "cache", "data", "vpn"]


def test_parse_hashes_ignores_other_lines():
    assert compose_v1.parse_hashes("WARNING: something\n" + HASH_OUTPUT + "nginx short\n") == HASHES


def test_with_dependencies_orders_dependencies_first():
    deps = {"nginx": ["app"], "app": ["db"], "db": [], "a": ["b"], "b": ["a"]}
    assert compose_v1.with_dependencies(["nginx"], deps) == ["db", "app", "nginx"]
    assert compose_v1.with_dependencies(["app", "db"], deps) == ["db", "app"]
    assert compose_v1.with_dependencies(["a"], deps) == ["b", "a"]   # a cycle does not loop


# --------------------------------------------------------------------------- plan


DEPS = {"app": ["db"], "db": [], "migration": ["db"], "nginx": ["app"]}
ALL = ["db", "app", "nginx"]


def plan(services, containers, hashes=None):
    return {a["id"]: a["status"] for a in compose_v1.plan_up(services, DEPS, hashes or HASHES, containers)}


def test_plan_fresh_project_creates_everything():
    assert plan(ALL, []) == {"db": "Creating", "app": "Creating", "nginx": "Creating"}


def test_plan_same_release_is_empty():
    running = [container("db"), container("app"), container("nginx")]
    assert plan(ALL, running) == {}
    # a one-off container of another release does not count
    assert plan(ALL, running + [container("app", "exited", "old", oneoff=True, name="p_app_run_1")]) == {}


def test_plan_new_image_recreates_only_that_service():
    running = [container("db"), container("app", config_hash="0" * 64), container("nginx")]
    assert plan(ALL, running) == {"app": "Recreate"}


def test_plan_stopped_dependent_of_a_recreated_service_is_recreated():
    running = [container("db"), container("app", config_hash="0" * 64), container("nginx", "exited")]
    assert plan(ALL, running) == {"app": "Recreate", "nginx": "Recreate"}
    running = [container("db"), container("app"), container("nginx", "exited")]
    assert plan(ALL, running) == {"nginx": "Starting"}


def test_plan_for_named_services_includes_their_dependencies():
    assert plan(["app"], [container("db", config_hash="1" * 64)]) == {"db": "Recreate", "app": "Creating"}


def test_plan_feeds_the_shared_planner():
    running = [container("db"), container("app", config_hash="0" * 64), container("nginx")]
    specs, _deps = compose_v1.parse_config(CONFIG_YAML)
    actions = compose_plan.services_from_dry_run(compose_v1.plan_up(ALL, DEPS, HASHES, running), "p", running, specs)
    assert actions == {"app": "recreate"}
    changes = compose_plan.plan_changes(specs, ALL, running, actions, {}, zero_downtime=True)
    assert [(c.service, c.action, c.strategy) for c in changes] == [
        ("db", "unchanged", "compose"), ("app", "recreate", "surge"), ("nginx", "unchanged", "compose")]


def test_down_actions_count_project_objects_only():
    containers = [{"name": "p_app_1", "service": "app"}, {"name": "p_migration_run_1", "service": "migration"},
                  {"name": "p_old_1", "service": "old"}]
    actions = compose_v1.down_actions(containers, ["p_default"], ["p_db_data"], ["app", "migration"], False)
    assert [(a["what"], a["id"]) for a in actions] == [("container", "p_app_1"), ("container", "p_migration_run_1"),
                                                      ("network", "p_default")]
    assert ("volume", "p_db_data") in [(a["what"], a["id"]) for a in
                                       compose_v1.down_actions([], [], ["p_db_data"], [], True)]
    assert compose_v1.down_actions([{"name": "p_old_1", "service": "old"}], [], ["v"], ["app"], False) == []


# --------------------------------------------------------------------------- output


def test_parse_events_of_a_fresh_up():
    events = compose_v1.parse_events(UP_FRESH)
    assert {"what": "network", "id": "p_default", "status": "Created"} in events
    assert {"what": "volume", "id": "p_db_data", "status": "Created"} in events
    assert [e["id"] for e in events if e["what"] == "container"] == ["p_db_1", "p_app_1", "p_nginx_1"]
    assert all(e["status"] == "Created" for e in events)


@pytest.mark.parametrize("text,expected", [
    (UP_UPDATE, [{"what": "container", "id": "p_app_1", "status": "Recreated"}]),
    (UP_NOTHING, []),
    (DOWN, [{"what": "container", "id": "p_app_2", "status": "Removed"},
            {"what": "container", "id": "p_db_1", "status": "Removed"},
            {"what": "network", "id": "p_default", "status": "Removed"}]),
    ("Restarting p_app_1 ... done\n", [{"what": "container", "id": "p_app_1", "status": "Restarted"}]),
])
def test_parse_events(text, expected):
    assert compose_v1.parse_events(text) == expected


def test_v1_errors_are_explained():
    events = compose_v1.parse_events(UP_PORT_TAKEN)
    assert events == [{"what": "container", "id": "p_nginx_1", "status": "Error"}]
    assert "host port 127.0.0.1:8080 is already in use" in compose_plan.explain_compose_failure(UP_PORT_TAKEN)
    assert "unknown service web" in compose_plan.explain_compose_failure("ERROR: No such service: web")
    assert "`docker-compose config`" in compose_plan.explain_config_failure("ERROR: bad", "docker-compose")


def test_missing_images_for_pull_never():
    specs, _ = compose_v1.parse_config(CONFIG_YAML)
    ids = {"dbops/postgres:15": "sha256:pg", "auto_trader:latest": None, "dbops/nginx:1.22": "sha256:n"}
    assert compose_v1.missing_images(specs, ["db", "app", "migration", "nginx"], ids) == ["auto_trader:latest"]
    assert "pull=never" in compose_v1.missing_images_message(["auto_trader:latest"])


def test_container_list_carries_the_config_hash():
    items = [{"Id": "a", "Names": ["/p_app_1"], "Image": "x", "ImageID": "sha256:x", "State": "running",
              "Status": "Up", "Labels": {compose_plan.PROJECT_LABEL: "p", compose_plan.SERVICE_LABEL: "app", compose_plan.NUMBER_LABEL: "1",
                                         compose_plan.ONEOFF_LABEL: "False", compose_plan.CONFIG_HASH_LABEL: HASHES["app"]}}]
    [parsed] = compose_plan.parse_container_list(items, "p")
    assert parsed.config_hash == HASHES["app"]
    assert compose_plan.container_from_dict(compose_plan.container_dict(parsed)) == parsed
