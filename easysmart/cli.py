"""`esm`: the project's command line (migrations, tenants, accounts, the demo, DLQ replay)."""
from __future__ import annotations

import argparse
import getpass
import os
import sys

import psycopg2

from easysmart import accounts
from easysmart.db import migrate

DEFAULT_TIMEZONE = "America/Sao_Paulo"


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("error: DATABASE_URL is not set (make targets set it from infra/local/local.env)")
    return url


def _connect():
    try:
        return psycopg2.connect(_database_url(), connect_timeout=10)
    except psycopg2.OperationalError as error:
        sys.exit(f"error: cannot connect to the database: {str(error).strip()}")


def _in_transaction(action):
    conn = _connect()
    try:
        with conn, conn.cursor() as cursor:
            return action(cursor)
    except accounts.AccountError as error:
        sys.exit(f"error: {error}")
    finally:
        conn.close()


def cmd_migrate(args) -> None:
    mode, applied = migrate(_database_url(), os.environ.get("DB_MODE", "auto"))
    print(f"==> database schema up to date ({mode} mode); applied: {', '.join(applied) or 'nothing new'}")


def cmd_tenant_create(args) -> None:
    try:
        accounts.check_timezone(args.timezone)
    except accounts.AccountError as error:
        sys.exit(f"error: {error}")
    def create(cursor):
        accounts.create_tenant(cursor, args.name, args.timezone, args.if_missing)
        return accounts.tenant_by_name(cursor, args.name)

    tenant_id, zone = _in_transaction(create)
    print(f"tenant {args.name} ({tenant_id}, {zone})")


def cmd_tenant_list(args) -> None:
    for name, tenant_id, zone in _in_transaction(accounts.list_tenants):
        print(f"{name}\t{tenant_id}\t{zone}")


def _password(args) -> str:
    return args.password or os.environ.get("ESM_PASSWORD") or getpass.getpass(f"password for {args.username}: ")


def cmd_account_create(args) -> None:
    if args.if_missing:
        existing = _in_transaction(lambda c: accounts.existing_account(c, args.tenant, args.kind, args.username))
        if existing:
            print(f"account {args.username} ({existing}) already exists; nothing to do")
            return
    password = _password(args)
    account_id = _in_transaction(lambda c: accounts.create_account(c, args.tenant, args.kind, args.username, password, args.if_missing))
    print(f"{args.kind} account {args.username} ({account_id}) in tenant {args.tenant}")


def cmd_account_block(args, blocked: bool = True) -> None:
    _in_transaction(lambda c: accounts.set_blocked(c, args.username, blocked))
    print(f"account {args.username} {'blocked' if blocked else 'unblocked'}")


def cmd_account_list(args) -> None:
    for tenant, username, kind, active, blocked in _in_transaction(lambda c: accounts.list_accounts(c, args.tenant)):
        print(f"{tenant}\t{username}\t{kind}\t{'active' if active else 'inactive'}\t{'blocked' if blocked else ''}")


def _demo_names() -> dict[str, str]:
    env = os.environ.get
    return {"tenant": env("DEMO_TENANT", "demo"), "device": env("DEMO_DEVICE_USER", "demo-device"),
            "device_password": env("DEMO_DEVICE_PASSWORD", "demo-device-pass"), "admin": env("DEMO_ADMIN_USER", "demo-admin"),
            "admin_password": env("DEMO_ADMIN_PASSWORD", "demo-admin-pass")}


def cmd_seed_demo(args) -> None:
    names = _demo_names()
    zone = os.environ.get("DEFAULT_TIMEZONE", DEFAULT_TIMEZONE)

    def seed(cursor):
        accounts.create_tenant(cursor, names["tenant"], zone, if_missing=True)
        accounts.create_account(cursor, names["tenant"], "device", names["device"], names["device_password"], if_missing=True)
        accounts.create_account(cursor, names["tenant"], "user", names["admin"], names["admin_password"], if_missing=True)

    _in_transaction(seed)
    print(f"==> demo tenant {names['tenant']!r}: device {names['device']!r}, user {names['admin']!r} (created if missing)")


def cmd_demo(args) -> None:
    from easysmart.demo import run_demo

    names = _demo_names()
    run_demo(os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080"), names["device"], names["device_password"],
             os.environ.get("DEFAULT_TIMEZONE", DEFAULT_TIMEZONE), os.environ.get("DATABASE_URL"))


def cmd_dlq_replay(args) -> None:
    from easysmart.dlq import replay

    report = replay(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ.get("KAFKA_TOPIC_DLQ", "telemetry.dlq"),
                    os.environ.get("KAFKA_TOPIC_RAW", "telemetry.raw"), limit=args.limit, dry_run=args.dry_run)
    verb = "listed" if args.dry_run else "replayed"
    print(f"==> {report.replayed if not args.dry_run else report.listed} dead-lettered claim check(s) {verb}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm", description="Easy Smart Monitor backend administration")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply pending database migrations").set_defaults(run=cmd_migrate)

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--timezone", default=os.environ.get("DEFAULT_TIMEZONE", DEFAULT_TIMEZONE),
                        help="IANA zone in which the tenant's naive times are read")
    create.add_argument("--if-missing", action="store_true", help="do nothing if it exists")
    create.set_defaults(run=cmd_tenant_create)
    tenant.add_parser("list", help="list tenants").set_defaults(run=cmd_tenant_list)

    account = commands.add_parser("account", help="manage device and user accounts").add_subparsers(dest="action", required=True)
    create = account.add_parser("create", help="create an account (password from --password, $ESM_PASSWORD or a prompt)")
    create.add_argument("username")
    create.add_argument("--tenant", required=True)
    create.add_argument("--kind", choices=["device", "user"], required=True)
    create.add_argument("--password")
    create.add_argument("--if-missing", action="store_true", help="do nothing if it exists")
    create.set_defaults(run=cmd_account_create)
    for action, blocked in (("block", True), ("unblock", False)):
        parser_ = account.add_parser(action, help=f"{action} an account")
        parser_.add_argument("username")
        parser_.set_defaults(run=lambda args, blocked=blocked: cmd_account_block(args, blocked))
    listing = account.add_parser("list", help="list accounts")
    listing.add_argument("--tenant")
    listing.set_defaults(run=cmd_account_list)

    commands.add_parser("seed-demo", help="create the demo tenant and accounts if missing").set_defaults(run=cmd_seed_demo)
    commands.add_parser("demo", help="send a demo upload through the public API and show what was stored").set_defaults(run=cmd_demo)

    dlq = commands.add_parser("dlq", help="dead-letter queue").add_subparsers(dest="action", required=True)
    replay = dlq.add_parser("replay", help="move dead-lettered claim checks back to telemetry.raw")
    replay.add_argument("--limit", type=int, help="replay at most this many")
    replay.add_argument("--dry-run", action="store_true", help="list them only")
    replay.set_defaults(run=cmd_dlq_replay)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
