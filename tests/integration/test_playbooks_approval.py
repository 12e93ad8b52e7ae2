"""The approval step of deploy.yml: a prompt on a terminal, a clear refusal without one.

The migration check runs against a real (empty) PostgreSQL database; the approval comes before
any change, so no compose stack is needed: the database service is not started
(dbops_compose_db_service is empty) and a refusal leaves the database empty.
"""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.ansible import REPO_ROOT, ansible_env, run_playbook
from tests.helpers.stack import APP_DIR

pytestmark = [pytest.mark.integration]


@pytest.fixture
def inventory(pg_db, tmp_path):
    login = pg_db.login_args()
    (tmp_path / "inv" / "group_vars").mkdir(parents=True)
    (tmp_path / "inv" / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {"app": {"hosts": {"localhost": None}}, "db": {"hosts": {"localhost": None}}}}}))
    (tmp_path / "inv" / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "dbops_project_src": str(APP_DIR), "dbops_compose_files": ["docker-compose.prod.yml"],
        "dbops_compose_project": "never-started", "dbops_compose_db_service": "",
        "dbops_app_image": "auto_trader", "app_version": "1.0.0",
        "dbops_db_host": login["login_host"], "dbops_db_port": login["login_port"],
        "dbops_db_name": login["login_db"], "dbops_db_user": login["login_user"],
        "dbops_db_password": login["login_password"],
        "dbops_alembic_config": str(APP_DIR / "alembic.ini"),
        "dbops_health_url": "http://127.0.0.1:9/healthz", "dbops_nginx_container": "never-started-nginx-1",
        "dbops_backup_dest": str(tmp_path / "backups"), "dbops_report_dir": str(tmp_path / "reports"),
    }))
    return tmp_path / "inv"


def run_on_terminal(argv: list[str], answer: str, timeout: float = 300) -> tuple[int, str]:
    """Run argv on a pseudo terminal and type ``answer`` at the approval prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(REPO_ROOT)
        os.execve(argv[0], argv, ansible_env())
    output = b""
    next_answer = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        # The pause prompt flushes pending input after it prints, so an answer typed too early
        # is thrown away: type it again until the play moves on past the prompt.
        prompt = output.rfind(b"Type yes to approve")
        moved_on = any(mark in output[prompt:] for mark in (b"TASK [", b"PLAY RECAP", b"fatal:", b"ok: ["))
        if prompt >= 0 and not moved_on and time.monotonic() >= next_answer:
            os.write(fd, answer.encode() + b"\r")
            next_answer = time.monotonic() + 3
    grace = time.monotonic() + 10
    finished, status = os.waitpid(pid, os.WNOHANG)
    while finished == 0 and time.monotonic() < grace:  # a closed terminal: the child is exiting
        time.sleep(0.2)
        finished, status = os.waitpid(pid, os.WNOHANG)
    if finished == 0:  # never hang the suite: a run that outlives its deadline is killed and fails the test
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        output += b"\n(killed after the deadline)"
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_high_path_prompts_on_a_terminal_and_a_no_changes_nothing(inventory, pg_db, tmp_path):
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"risk": "high"}))
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
            str(REPO_ROOT / "playbooks" / "deploy.yml"), "-e", f"@{vars_file}"]
    rc, output = run_on_terminal(argv, "no", timeout=240)
    assert "Type yes to approve" in output
    assert "will migrate 0001, 0002, 0003, 0004, 0005" in output
    assert rc != 0 and "needs an explicit approval" in output
    assert pg_db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    assert not (tmp_path / "backups").exists()
    assert not (tmp_path / "reports" / "deploy.lock").exists()


def test_without_a_terminal_the_medium_path_asks_for_approve_true(inventory, pg_db):
    run = run_playbook(REPO_ROOT / "playbooks" / "deploy.yml", {"risk": "medium"}, inventory=inventory)
    assert run.rc != 0
    assert "needs an explicit approval: run again with -e approve=true" in run.output
    assert "Not waiting for response to prompt as stdin is not interactive" in " ".join(run.output.split()), run.output
    assert pg_db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
