"""maintenance_mode role on the example stack's nginx container: 503 on, 200 off, idempotent."""
from __future__ import annotations

import re
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
    up.up()
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
    assert "previous snippet is back" in run.output
    assert fetch(stack.base_url + "/version")[0] == 200
    assert fetch(stack.base_url + "/healthz")[0] == 200
