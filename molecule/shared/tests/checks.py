"""Checks shared by the scenarios' testinfra verifiers."""
from __future__ import annotations

import glob
import json
import os

WORK = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "")
PROJECT = "molecule-" + SCENARIO


def host_vars(host) -> dict:
    return host.ansible.get_variables()


def get_json(host, url: str) -> tuple[int, dict | str]:
    out = host.run("curl -s -o /dev/stdout -w '\\n%%{http_code}' %s", url)
    body, _, status = out.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status or 0), body


def base_url(host) -> str:
    return "http://127.0.0.1:%s" % host_vars(host)["molecule_nginx_port"]


def reports(pattern: str = "deploy-2*.json") -> list[dict]:
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(WORK, "reports", pattern)))]


def manifests() -> list[str]:
    return sorted(glob.glob(os.path.join(WORK, "backups", "*.manifest.json")))


def expected_failure_log() -> str:
    with open(os.path.join(WORK, "expected-failure.log")) as fh:
        return fh.read()
