"""Fill the tables with a realistic volume of data, fast (COPY).

    python -m auto_trader.seed --users 10000 --orders 200000

Works at any schema revision: it writes only the columns every revision has, and
trades when that table exists. DATABASE_URL selects the database.
"""
from __future__ import annotations

import argparse
import io
import random
from urllib.parse import urlsplit, unquote

import psycopg2

from . import config

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX", "AMD", "INTC"]
BATCH = 50_000


def _connect():
    parts = urlsplit(config.database_url())
    return psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=unquote(parts.username or ""),
                            password=unquote(parts.password or "") or None, dbname=parts.path.lstrip("/"))


def _copy(cur, table: str, columns: str, rows) -> None:
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(str(v) for v in row) + "\n")
        count += 1
        if count % BATCH == 0:
            buffer.seek(0)
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)
            buffer = io.StringIO()
    buffer.seek(0)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)


def _max_id(cur, table: str) -> int:
    cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
    return cur.fetchone()[0]


def seed(users: int, orders: int, trades_per_order: float = 0.3, seed_value: int = 42) -> dict:
    rng = random.Random(seed_value)
    with _connect() as conn, conn.cursor() as cur:
        first_user = _max_id(cur, "users") + 1
        _copy(cur, "users", "email, name",
              ((f"user{i}@example.com", f"User {i}") for i in range(first_user, first_user + users)))
        cur.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))")
        first_account = _max_id(cur, "accounts") + 1
        _copy(cur, "accounts", "id, user_id, currency, balance",
              ((first_account + n, uid, "USD", f"{rng.uniform(0, 100000):.2f}")
               for n, uid in enumerate(range(first_user, first_user + users))))
        cur.execute("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))")
        accounts = range(first_account, first_account + users)
        first_order = _max_id(cur, "orders") + 1
        _copy(cur, "orders", "id, account_id, symbol, side, quantity, price, status",
              ((first_order + n, rng.choice(accounts), rng.choice(SYMBOLS), rng.choice(("buy", "sell")),
                rng.randint(1, 500), f"{rng.uniform(5, 900):.4f}", rng.choice(("open", "filled", "cancelled")))
               for n in range(orders)) if users else ())
        cur.execute("SELECT setval(pg_get_serial_sequence('orders', 'id'), greatest((SELECT max(id) FROM orders), 1))")
        trades = 0
        cur.execute("SELECT to_regclass('trades') IS NOT NULL")
        if cur.fetchone()[0] and orders:
            trades = int(orders * trades_per_order)
            _copy(cur, "trades", "order_id, quantity, price",
                  ((rng.randint(first_order, first_order + orders - 1), rng.randint(1, 100),
                    f"{rng.uniform(5, 900):.4f}") for _ in range(trades)))
        cur.execute("ANALYZE")
    return {"users": users, "accounts": users, "orders": orders, "trades": trades}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=42, help="random seed, for repeatable data")
    args = parser.parse_args(argv)
    print(seed(args.users, args.orders, seed_value=args.seed))


if __name__ == "__main__":
    main()
