"""The backup role and playbooks/backup.yml through real ansible-playbook."""
from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from tests.helpers import postgres as pgh
from tests.helpers.ansible import REPO_ROOT, run_playbook

pytestmark = pytest.mark.integration


def _db_vars(db, dest):
    return {"backup_hosts": "localhost", "backup_dest": str(dest), "backup_login_host": db.server.host,
            "backup_login_port": db.server.port, "backup_login_user": db.server.user,
            "backup_login_password": db.server.password, "backup_login_db": db.name,
            **{"backup_" + k: v for k, v in pgh.client_options(db.server).items()}}


def test_playbook_backs_up_verifies_and_prunes(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE alembic_version (version_num text); INSERT INTO alembic_version VALUES ('0002');"
                  "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1234)")
    dest = tmp_path / "b"
    for _ in range(3):
        run = run_playbook(REPO_ROOT / "playbooks" / "backup.yml", dict(_db_vars(pg_db, dest), backup_keep=2))
        assert run.rc == 0, run.output[-3000:]
    dumps = sorted(n for n in os.listdir(dest) if n.endswith(".dir"))
    assert len(dumps) == 2
    manifest = json.loads((dest / (dumps[-1] + ".manifest.json")).read_text())
    assert manifest["tables"]["public.t"] == 1234 and manifest["alembic_revision"] == "0002"
    assert manifest["verification"]["mode"] == "restore" and manifest["verification"]["verified"]
    # The module's default compression: gzip level 1, or zstd at its own level with a pg_dump of 16 or newer
    # (the one in the server's container when the host's is too old for the server).
    dumped_with = int(manifest["tools"]["pg_dump"].split()[2].split(".")[0])
    expected = ("directory", 2, 1, "gzip") if dumped_with < 16 else ("directory", 2, None, "zstd")
    assert (manifest["format"], manifest["jobs"], manifest["compress"], manifest["compress_method"]) == expected
    assert "alembic revision 0002" in run.output
    assert pgh.TEST_PASSWORD not in run.output


def test_playbook_reads_the_database_from_the_inventory(pg_db, tmp_path):
    """The form the playbook's header documents: dbops_* in the inventory, nothing on the command line."""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 321)")
    dest = tmp_path / "from-inventory"
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {"db": {"hosts": {"localhost": None}}}}}))
    login = pg_db.login_args()
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "dbops_db_host": login["login_host"], "dbops_db_port": login["login_port"],
        "dbops_db_user": login["login_user"], "dbops_db_password": login["login_password"],
        "dbops_db_name": login["login_db"], "dbops_backup_dest": str(dest), "dbops_backup_verify": "list",
        **{"dbops_backup_" + k: v for k, v in pgh.client_options(pg_db.server).items()}}))
    run = run_playbook(REPO_ROOT / "playbooks" / "backup.yml", inventory=inventory)
    assert run.rc == 0, run.output[-3000:]
    [manifest_file] = sorted(dest.glob("*.manifest.json"))
    manifest = json.loads(manifest_file.read_text())
    assert manifest["database"] == pg_db.name and manifest["tables"] == {"public.t": 321}
    assert manifest["verification"]["mode"] == "list" and manifest["verification"]["verified"] is True
    assert login["login_password"] not in run.output


def test_role_publishes_manifest_and_fails_the_play_without_a_good_backup(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
    out = tmp_path / "facts.json"
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "dbops.migrations.backup"}],
        "post_tasks": [{"name": "save facts", "ansible.builtin.copy": {
            "dest": str(out), "mode": "0600",
            "content": "{{ {'manifest': backup_manifest, 'path': backup_path, 'verified': backup_verified} | to_json }}"}}],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    good = run_playbook(playbook, dict(_db_vars(pg_db, tmp_path / "b"), backup_verify="list"))
    assert good.rc == 0, good.output[-3000:]
    facts = json.loads(out.read_text())
    assert facts["verified"] is True and facts["manifest"]["tables"] == {"public.t": 2}
    assert os.path.exists(facts["path"])
    out.unlink()

    bad = run_playbook(playbook, dict(_db_vars(pg_db, tmp_path / "b"), backup_login_password="wrong-pw-0000"))
    assert bad.rc != 0
    assert "No good backup" in bad.output and "password authentication failed" in bad.output
    assert not out.exists(), "the play went on after a failed backup"

    wrong = run_playbook(playbook, dict(_db_vars(pg_db, tmp_path / "b"), backup_format="tar"))
    assert wrong.rc != 0 and "backup_format" in wrong.output and "tar" in wrong.output
