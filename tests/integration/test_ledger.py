"""The second example application, released through the collection's playbooks.

examples/ledger differs from the demo in every name the playbooks touch: compose file, services,
migration service and profile, image and tag variable, password variable, the DATABASE_URL form
and its variable, the version table, a Flask-Migrate folder, an ordinary nginx upstream, and a
maintenance flag file the app serves itself. Its inventory (inventories/ledger) is all it takes.

One stack for the module (bringing it up is the slow part); the tests run in order, each from the
state the previous one left: low (1.0.0) -> medium (1.1.0) -> a broken release -> high/critical
(1.2.0) -> rollback.yml rollback=app.
"""
from __future__ import annotations

import pytest

from tests.helpers.ledger import FLAG_PATH, REPOSITORY, VERSION_TABLE, Probe, release_heads, started_ledger

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HEADS = release_heads()

@pytest.fixture(scope="module")
def ledger(docker_client, tmp_path_factory):
    with started_ledger(docker_client, tmp_path_factory.mktemp("ledger")) as stack:
        yield stack


@pytest.fixture(scope="module")
def seeded(ledger):
    """What users wrote on 1.0.0; later releases must keep it."""
    return {}


class TestLedgerReleases:
    def test_low_path_migrates_a_fresh_database_and_releases_1_0_0(self, ledger, seeded):
        with ledger.step("the low path (1.0.0)"):
            assert ledger.health()["revision"] is None  # the operator's stack, no schema yet
            run = ledger.deploy("1.0.0", risk="auto")
            assert run.rc == 0, ledger.explain(run)
            assert ledger.revision() == HEADS["1.0.0"]
            assert ledger.scalar("SELECT to_regclass('alembic_version')") is None
            health = ledger.health()
            assert (health["status"], health["revision"], health["version"]) == ("ok", HEADS["1.0.0"], "1.0.0")
            summary = ledger.reports()[-1]
            assert (summary["path"], summary["risk"]) == ("low", "low")
            assert summary["revisions_applied"] == ["3f2a9c1d7b44", "8b1e6f0a2c57"]
            # Users write through the proxy: two accounts (one without a currency), three entries each.
            for name, currency in (("cash", None), ("bank", "USD")):
                status, body = ledger.post("/api/accounts", {"name": name, "currency": currency})
                assert status == 201, body
                seeded[name] = body["id"]
                for amount in (1000, -250, 75):
                    assert ledger.post(f"/api/accounts/{body['id']}/entries", {"amount_cents": amount})[0] == 201
            # Imported history carries the old system's reference (replaced by `reference` in 1.2.0).
            ledger.query("UPDATE entries SET legacy_ref = 'IMP-' || id")
            seeded["balances"] = {a["name"]: a["balance_cents"] for a in ledger.get("/api/accounts")[1]["accounts"]}
            seeded["refs"] = dict(ledger.query("SELECT id, legacy_ref FROM entries"))
            assert seeded["balances"] == {"cash": 825, "bank": 825}

    def test_medium_path_releases_1_1_0_behind_a_caching_proxy_without_failed_requests(self, ledger, seeded):
        with ledger.step("the medium path (1.1.0)"):
            with Probe(ledger) as probe:
                run = ledger.deploy("1.1.0", risk="auto", approve=True)
            assert run.rc == 0, ledger.explain(run)
            assert ledger.revision() == HEADS["1.1.0"]
            health = ledger.health()
            assert (health["revision"], health["version"]) == (HEADS["1.1.0"], "1.1.0")
            summary = ledger.reports()[-1]
            assert (summary["path"], summary["risk"]) == ("medium", "medium")
            assert summary["revisions_applied"] == ["c41d7e93a0f8", "5e0b2a8f6d13", "a97c3d5e1b20"]
            assert ledger.backups(), "the medium path takes a backup"
            # The backfill ran; the validated constraint and the concurrent index exist and are valid.
            assert dict(ledger.query("SELECT name, currency FROM accounts")) == {"cash": "EUR", "bank": "USD"}
            assert ledger.scalar("SELECT convalidated FROM pg_constraint WHERE conname = 'ck_entries_amount_nonzero'")
            assert ledger.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                                 "'ix_entries_account_id_created_at'::regclass")
            # The proxy resolves `api` once: the release must still not drop a single request.
            assert len(probe.results) > 20
            assert probe.failures() == [], f"{len(probe.failures())} of {len(probe.results)} requests failed"

    def test_broken_release_is_rolled_back_and_1_1_0_keeps_serving(self, ledger, seeded):
        with ledger.step("the broken release"):
            api_before = ledger.containers("api")[0].image.id
            with Probe(ledger) as probe:
                run = ledger.deploy("broken", risk="auto")
            assert run.rc != 0, ledger.explain(run)
            assert "roll" in run.output.lower(), ledger.explain(run)
            health = ledger.health()
            assert (health["version"], health["revision"]) == ("1.1.0", HEADS["1.1.0"])
            assert [c.image.id for c in ledger.containers("api")] == [api_before]
            assert ledger.revision() == HEADS["1.1.0"]
            # The broken release never took traffic.
            assert probe.failures() == [], probe.failures()[:5]

    def test_high_path_releases_1_2_0_under_the_maintenance_flag(self, ledger, seeded):
        with ledger.step("the high path (1.2.0)"):
            counts = dict(ledger.query("SELECT 'accounts', count(*) FROM accounts UNION ALL "
                                       "SELECT 'entries', count(*) FROM entries"))
            with Probe(ledger) as probe:
                run = ledger.deploy("1.2.0", risk="auto", approve=True)
            assert run.rc == 0, ledger.explain(run)
            assert ledger.revision() == HEADS["1.2.0"]
            summary = ledger.reports()[-1]
            assert (summary["path"], summary["risk"]) == ("high", "critical")
            assert summary["revisions_applied"] == ["d2f8b4c6e915", "e6a0c9f3b8d1"]
            assert summary["maintenance"] == "was on, now off"
            # Users saw the app's own maintenance answer while the schema changed, then the ledger again.
            maintenance = [body for status, body in probe.results if status == 503]
            assert maintenance and all(isinstance(b, dict) and b.get("error") == "maintenance" for b in maintenance)
            assert probe.failures(allowed=(200, 503)) == [], probe.failures(allowed=(200, 503))[:5]
            assert probe.statuses()[-1] == 200
            assert not ledger.flag_present(), f"{FLAG_PATH} left behind"
            # The data went through the type change and the backfill intact.
            assert ledger.column_type("entries", "amount_cents") == "bigint"
            assert ledger.column_type("entries", "legacy_ref") is None
            assert dict(ledger.query("SELECT id, reference FROM entries")) == seeded["refs"]
            assert dict(ledger.query("SELECT 'accounts', count(*) FROM accounts UNION ALL "
                                     "SELECT 'entries', count(*) FROM entries")) == counts
            health = ledger.health()
            assert (health["version"], health["revision"], health["maintenance"]) == ("1.2.0", HEADS["1.2.0"], False)

    def test_rollback_app_brings_1_1_0_back_and_keeps_schema_data_and_tags(self, ledger, seeded):
        with ledger.step("rollback=app"):
            run = ledger.play("rollback", {"rollback": "app", "app_version": "1.2.0"})
            assert run.rc == 0, ledger.explain(run)
            health = ledger.health()
            assert (health["version"], health["revision"]) == ("1.1.0", HEADS["1.2.0"])
            assert ledger.revision() == HEADS["1.2.0"]
            status, body = ledger.get("/api/accounts")
            assert status == 200
            assert {a["name"]: a["balance_cents"] for a in body["accounts"]} == seeded["balances"]
            assert not ledger.flag_present()
            # Release tags were never rewritten; backups live under tags of their own.
            assert ledger.release_image_ids() == ledger.release_ids_before
            backup_tags = [tag for tag in ledger.repository_tags()
                           if tag.startswith(f"{REPOSITORY}:") and ledger.project in tag]
            assert backup_tags, ledger.repository_tags()
            assert ledger.scalar(f"SELECT count(*) FROM {VERSION_TABLE}") == 1
