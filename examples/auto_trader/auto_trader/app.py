"""The auto_trader HTTP service: JSON endpoints and health checks."""
from __future__ import annotations

import os
import threading
import time
from decimal import Decimal

from flask import Flask, abort, jsonify, request
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from . import config

if config.APP_FAULT == "crash":
    raise SystemExit("APP_FAULT=crash: this release fails on start")

engine = create_engine(config.database_url(), pool_pre_ping=True, pool_size=5, max_overflow=5,
                       connect_args={"connect_timeout": 3})
app = Flask(__name__)
_started = time.monotonic()

if config.APP_FAULT == "crash_after":
    # A release that starts, looks fine, then dies: the rollback path must catch it.
    threading.Timer(5.0, lambda: os._exit(3)).start()


def _json_default(value):
    return str(value) if isinstance(value, Decimal) else value


def _rows(result) -> list[dict]:
    return [{k: _json_default(v) for k, v in row._mapping.items()} for row in result]


@app.get("/livez")
def livez():
    """Container liveness: the process answers (the docker HEALTHCHECK uses this)."""
    if config.APP_FAULT == "unhealthy":
        return jsonify(status="unhealthy", version=config.APP_VERSION), 503
    return jsonify(status="alive", version=config.APP_VERSION)


@app.get("/healthz")
def healthz():
    """Deep health: the database answers; reports the schema revision and the release."""
    if config.APP_FAULT == "http500":
        return jsonify(status="error", version=config.APP_VERSION), 500
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            revision = conn.execute(text(
                "SELECT version_num FROM alembic_version LIMIT 1")).scalar() if _has_alembic(conn) else None
    except SQLAlchemyError as exc:
        return jsonify(status="error", database="unreachable", error=type(exc).__name__,
                       version=config.APP_VERSION), 503
    return jsonify(status="ok", database="ok", revision=revision, version=config.APP_VERSION,
                   uptime_s=round(time.monotonic() - _started, 1))


def _has_alembic(conn) -> bool:
    return bool(conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar())


@app.get("/version")
def version():
    return jsonify(version=config.APP_VERSION)


@app.get("/api/users")
def list_users():
    limit = min(int(request.args.get("limit", 20)), 200)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, email, name FROM users ORDER BY id LIMIT :limit"), {"limit": limit})
        return jsonify(users=_rows(rows))


@app.post("/api/users")
def create_user():
    body = request.get_json(force=True, silent=True) or {}
    if not body.get("email") or not body.get("name"):
        return jsonify(error="email and name are required"), 400
    with engine.begin() as conn:
        user_id = conn.execute(text("INSERT INTO users (email, name) VALUES (:email, :name) RETURNING id"),
                               {"email": body["email"], "name": body["name"]}).scalar()
        account_id = conn.execute(text("INSERT INTO accounts (user_id, currency, balance) "
                                       "VALUES (:uid, :cur, 0) RETURNING id"),
                                  {"uid": user_id, "cur": body.get("currency", "USD")}).scalar()
    return jsonify(id=user_id, account_id=account_id), 201


@app.get("/api/accounts/<int:account_id>")
def get_account(account_id: int):
    with engine.connect() as conn:
        rows = _rows(conn.execute(text("SELECT id, user_id, currency, balance FROM accounts WHERE id = :id"),
                                  {"id": account_id}))
    if not rows:
        abort(404)
    return jsonify(rows[0])


@app.post("/api/orders")
def place_order():
    body = request.get_json(force=True, silent=True) or {}
    try:
        params = {"account_id": int(body["account_id"]), "symbol": str(body["symbol"])[:12],
                  "side": str(body.get("side", "buy"))[:4], "quantity": int(body["quantity"]),
                  "price": Decimal(str(body["price"]))}
    except (KeyError, ValueError, ArithmeticError):
        return jsonify(error="account_id, symbol, quantity and price are required"), 400
    with engine.begin() as conn:
        order_id = conn.execute(text(
            "INSERT INTO orders (account_id, symbol, side, quantity, price, status) "
            "VALUES (:account_id, :symbol, :side, :quantity, :price, 'open') RETURNING id"), params).scalar()
    return jsonify(id=order_id), 201


@app.get("/api/orders")
def list_orders():
    account_id = request.args.get("account_id", type=int)
    limit = min(int(request.args.get("limit", 50)), 500)
    sql = "SELECT id, account_id, symbol, side, quantity, price, status FROM orders"
    params: dict = {"limit": limit}
    if account_id is not None:
        sql += " WHERE account_id = :account_id"
        params["account_id"] = account_id
    with engine.connect() as conn:
        return jsonify(orders=_rows(conn.execute(text(sql + " ORDER BY id DESC LIMIT :limit"), params)))


@app.get("/api/stats")
def stats():
    with engine.connect() as conn:
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                  for table in ("users", "accounts", "orders")}
    return jsonify(counts)
