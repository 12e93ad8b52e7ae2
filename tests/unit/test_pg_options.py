import pytest

from ansible_collections.dbops.migrations.plugins.module_utils import pg as _pg


def test_parse_url_with_quoted_password():
    info = _pg.parse_db_url("postgresql+psycopg2://app:p%40ss%3Aw@db.local:6432/trade?sslmode=require")
    assert (info.host, info.port, info.user, info.password, info.dbname) == ("db.local", 6432, "app", "p@ss:w", "trade")
    assert info.options == {"sslmode": "require"}
    assert "p@ss" not in info.masked_url() and "***" in info.masked_url()
    assert info.libpq_env()["PGPASSWORD"] == "p@ss:w"


def test_url_roundtrip():
    info = _pg.parse_db_url("postgresql://u:s%20cret@127.0.0.1:5433/d")
    assert _pg.parse_db_url(info.url()) == info


@pytest.mark.parametrize("url", ["mysql://x@y/z", "http://h/d", "postgresql://u@h:notaport/d"])
def test_bad_urls_say_what_to_do(url):
    with pytest.raises(_pg.ConnectionOptionsError, match="postgresql://"):
        _pg.parse_db_url(url)


def test_login_params_or_nothing():
    info = _pg.conninfo_from_params({"login_host": "h", "login_user": "u", "login_password": "p", "login_db": "d", "login_port": 5432})
    assert info.dbname == "d" and info.password == "p"
    with pytest.raises(_pg.ConnectionOptionsError, match="db_url"):
        _pg.conninfo_from_params({})


@pytest.mark.parametrize("text", [
    "could not connect postgresql://app:hunter2@db/x",
    "postgresql+psycopg2://app:hunter2@db:5432/x failed",
    "dsn: host=db password=hunter2 user=app",
    "the secret hunter2 leaked",
])
def test_mask_secrets(text):
    assert "hunter2" not in _pg.mask_secrets(text, "hunter2")


@pytest.mark.parametrize("name,quoted", [
    ("trade", "'trade'"),
    ("o'brien db", "'o\\'brien db'"),
    ("a=b\\c", "'a=b\\\\c'"),
])
def test_conninfo_quote_keeps_a_name_one_value(name, quoted):
    assert _pg.conninfo_quote(name) == quoted
