"""The ledger HTTP API: accounts, entries, balances, and /health for operators."""
from __future__ import annotations

from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import config
from .cli import db_commands

engine = create_engine(config.database_url(), pool_pre_ping=True, pool_size=4, max_overflow=4,
                       connect_args={"connect_timeout": 3})
app = Flask(__name__)
app.cli.add_command(db_commands)


def in_maintenance() -> bool:
    return config.MAINTENANCE_FLAG.exists()


@app.before_request
def maintenance_page():
    """Writes must stop during a risky migration; operators still see /health."""
    if request.path != "/health" and in_maintenance():
        response = jsonify(error="maintenance", message="The ledger is being upgraded; try again shortly.")
        response.status_code = 503
        response.headers["Retry-After"] = "60"
        response.headers["Cache-Control"] = "no-store"
        return response
    return None


@app.get("/health")
def health():
    """Deep health: the database answers; reports the schema revision and the release."""
    if config.FAULT == "health":
        return jsonify(status="error", revision=None, version=config.RELEASE, error="broken release"), 500
    try:
        with engine.connect() as conn:
            revision = None  # no schema yet: a fresh database before its first migration
            if conn.execute(text("SELECT to_regclass(:table) IS NOT NULL"), {"table": config.VERSION_TABLE}).scalar():
                revision = conn.execute(text(f"SELECT version_num FROM {config.VERSION_TABLE} LIMIT 1")).scalar()
    except SQLAlchemyError as exc:
        return jsonify(status="error", revision=None, version=config.RELEASE, error=type(exc).__name__), 503
    return jsonify(status="ok", revision=revision, version=config.RELEASE, maintenance=in_maintenance())


@app.get("/api/accounts")
def list_accounts():
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.id, a.name, a.currency, COALESCE(sum(e.amount_cents), 0) AS balance_cents "
            "FROM accounts a LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.id ORDER BY a.id"))
        return jsonify(accounts=[_account(row) for row in rows])


@app.post("/api/accounts")
def open_account():
    body = request.get_json(force=True, silent=True) or {}
    name = str(body.get("name") or "").strip()
    if not name:
        return jsonify(error="name is required"), 400
    with engine.begin() as conn:
        account_id = conn.execute(text("INSERT INTO accounts (name, currency) VALUES (:name, :currency) RETURNING id"),
                                  {"name": name[:80], "currency": body.get("currency")}).scalar()
    return jsonify(id=account_id), 201


@app.get("/api/accounts/<int:account_id>")
def show_account(account_id: int):
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT a.id, a.name, a.currency, COALESCE(sum(e.amount_cents), 0) AS balance_cents "
            "FROM accounts a LEFT JOIN entries e ON e.account_id = a.id WHERE a.id = :id GROUP BY a.id"),
            {"id": account_id}).first()
    if row is None:
        return jsonify(error="no such account"), 404
    return jsonify(_account(row))


@app.post("/api/accounts/<int:account_id>/entries")
def post_entry(account_id: int):
    body = request.get_json(force=True, silent=True) or {}
    try:
        amount = int(body["amount_cents"])
    except (KeyError, TypeError, ValueError):
        return jsonify(error="amount_cents (an integer) is required"), 400
    try:
        with engine.begin() as conn:
            entry_id = conn.execute(text(
                "INSERT INTO entries (account_id, amount_cents, memo) VALUES (:account, :amount, :memo) RETURNING id"),
                {"account": account_id, "amount": amount, "memo": body.get("memo")}).scalar()
    except IntegrityError:
        return jsonify(error="no such account, or a zero amount"), 422
    return jsonify(id=entry_id), 201


@app.get("/api/accounts/<int:account_id>/entries")
def list_entries(account_id: int):
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, amount_cents, memo FROM entries WHERE account_id = :id ORDER BY id"),
                            {"id": account_id})
        return jsonify(entries=[{"id": r.id, "amount_cents": int(r.amount_cents), "memo": r.memo} for r in rows])


def _account(row) -> dict:
    return {"id": row.id, "name": row.name, "currency": row.currency, "balance_cents": int(row.balance_cents)}
