def test_private_cluster_answers(pg_db):
    assert pg_db.scalar("SELECT current_setting('server_version_num')::int") >= 150000
    assert pg_db.scalar("SELECT current_database()") == pg_db.name
