"""maintenance_mode role: the example stack's nginx and a flag-file app; 503 on, 200 off, idempotent,
and a switch users would not see is taken back (fails closed)."""
from __future__ import annotations

import re
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.ansible import run_playbook
from tests.helpers.stack import ComposeStack

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(docker_client):
    up = ComposeStack()
    try:
        up.up()
    except AssertionError:
        # A loaded machine can start the app slower than its image's healthcheck allows: what
        # these tests need is nginx in front of a serving app.
        up.wait_for("/healthz", timeout=180)
    yield up
    up.down()


def switch(stack: ComposeStack, tmp_path: Path, state: str, check: bool = False, **extra):
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{
        "role": "dbops.migrations.maintenance_mode",
        "vars": {"maintenance_mode_state": state,
                 "maintenance_mode_container": "%s-nginx-1" % stack.project,
                 "maintenance_mode_check_url": stack.base_url + "/version",
                 "maintenance_mode_health_url": stack.base_url + "/healthz", **extra}}]}]
    playbook = tmp_path / ("maintenance_%s.yml" % state)
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    return run_playbook(playbook, check=check)


def changed_count(output: str) -> int:
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    assert match, output[-2000:]
    return int(match.group(1))


def fetch(url: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_maintenance_on_serves_503_keeps_healthz_and_off_serves_200(stack, tmp_path):
    assert fetch(stack.base_url + "/version")[0] != 503

    check = switch(stack, tmp_path, "on", check=True)
    assert check.rc == 0, check.output[-3000:]
    assert fetch(stack.base_url + "/version")[0] != 503     # check mode touched nothing

    on = switch(stack, tmp_path, "on", maintenance_mode_retry_after=300)
    assert on.rc == 0, on.output[-3000:]
    assert changed_count(on.output) >= 1
    status, headers, body = fetch(stack.base_url + "/version")
    assert status == 503 and headers.get("Retry-After") == "300"
    assert "maintenance" in body.lower()
    assert fetch(stack.base_url + "/healthz")[0] == 200

    again = switch(stack, tmp_path, "on", maintenance_mode_retry_after=300)
    assert again.rc == 0 and changed_count(again.output) == 0, again.output[-3000:]

    off = switch(stack, tmp_path, "off")
    assert off.rc == 0 and changed_count(off.output) >= 1, off.output[-3000:]
    assert fetch(stack.base_url + "/version")[0] == 200

    off_again = switch(stack, tmp_path, "off")
    assert off_again.rc == 0 and changed_count(off_again.output) == 0, off_again.output[-3000:]


def test_a_snippet_nginx_rejects_is_rolled_back(stack, tmp_path):
    bad = tmp_path / "bad.conf.j2"
    bad.write_text("this is not nginx;\n")
    run = switch(stack, tmp_path, "on", maintenance_mode_template=str(bad))
    assert run.rc != 0
    assert "the previous state is back" in run.output and "handles $maintenance" in run.output
    assert fetch(stack.base_url + "/version")[0] == 200
    assert fetch(stack.base_url + "/healthz")[0] == 200


def test_a_snippet_nginx_does_not_include_fails_closed(stack, tmp_path):
    # /etc/nginx/*.conf is not included by the server block: nginx -t passes, users see nothing.
    run = switch(stack, tmp_path, "on", maintenance_mode_conf_dir="/etc/nginx",
                 maintenance_mode_conf_name="dbops-not-included.conf", maintenance_mode_check_timeout=2)
    assert run.rc != 0
    assert "Maintenance mode is NOT served: %s/version answered 200 instead of 503" % stack.base_url in run.output
    assert "the switch was taken back" in run.output
    assert "include /etc/nginx/*.conf;" in run.output and "if ($maintenance = on) { return 503; }" in run.output
    probe = stack.compose("exec", "-T", "nginx", "ls", "/etc/nginx", check=True).stdout
    assert "dbops-not-included.conf" not in probe
    assert fetch(stack.base_url + "/version")[0] == 200


# A tiny application that answers 503 for every request while its flag file exists.
FLAG_APP = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        code = 503 if os.path.exists('/tmp/dbops/maintenance.flag') else 200\n"
    "        self.send_response(code); self.end_headers(); self.wfile.write(b'ok' if code == 200 else b'maintenance')\n"
    "os.makedirs('/tmp/dbops', exist_ok=True)\n"
    "http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()\n")


@pytest.fixture
def flag_app(docker_client):
    from tests.helpers.postgres import free_port
    from tests.helpers.release import base_image
    port = free_port()
    container = docker_client.containers.run(base_image(docker_client), ["python3", "-c", FLAG_APP], detach=True,
                                             ports={"8000/tcp": ("127.0.0.1", port)},
                                             name="dbops-flag-" + uuid.uuid4().hex[:8])
    url = "http://127.0.0.1:%d/" % port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if fetch(url)[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    yield container, url
    container.remove(force=True)


def flag_switch(container, url, tmp_path, state, **extra):
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{
        "role": "dbops.migrations.maintenance_mode",
        "vars": {"maintenance_mode_state": state, "maintenance_mode_method": "flag",
                 "maintenance_mode_container": container.name, "maintenance_mode_check_url": url, **extra}}]}]
    playbook = tmp_path / ("flag_%s.yml" % state)
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    return run_playbook(playbook)


def test_flag_method_serves_503_while_the_flag_exists(flag_app, tmp_path):
    container, url = flag_app
    on = flag_switch(container, url, tmp_path, "on", maintenance_mode_flag_path="/tmp/dbops/maintenance.flag")
    assert on.rc == 0, on.output[-3000:]
    assert fetch(url)[0] == 503
    assert container.exec_run(["test", "-f", "/tmp/dbops/maintenance.flag"]).exit_code == 0
    again = flag_switch(container, url, tmp_path, "on", maintenance_mode_flag_path="/tmp/dbops/maintenance.flag")
    assert again.rc == 0 and changed_count(again.output) == 0, again.output[-3000:]
    off = flag_switch(container, url, tmp_path, "off", maintenance_mode_flag_path="/tmp/dbops/maintenance.flag")
    assert off.rc == 0 and changed_count(off.output) >= 1, off.output[-3000:]
    assert fetch(url)[0] == 200
    assert container.exec_run(["test", "-f", "/tmp/dbops/maintenance.flag"]).exit_code != 0


def test_a_flag_the_app_ignores_fails_closed(flag_app, tmp_path):
    container, url = flag_app
    run = flag_switch(container, url, tmp_path, "on", maintenance_mode_flag_path="/tmp/ignored.flag",
                      maintenance_mode_check_timeout=2)
    assert run.rc != 0
    assert "Maintenance mode is NOT served: %s answered 200 instead of 503" % url in run.output
    assert "The application must answer 503 for every request while /tmp/ignored.flag exists" in run.output
    assert container.exec_run(["test", "-f", "/tmp/ignored.flag"]).exit_code != 0
