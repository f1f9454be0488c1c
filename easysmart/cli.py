"""`esm`: the project's command line (migrations, tenants, accounts, the demo, DLQ replay, configuration)."""

from __future__ import annotations

import argparse
import ast
import getpass
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import redis

from easysmart import accounts, partitions
from easysmart.accountstate import STATE_TTL_S, AccountState, mirror_state
from easysmart.authz import ROLE_NAMES
from easysmart.config import (
    SERVER_VARIABLES,
    AccountSettings,
    ConfigError,
    DatabaseSettings,
    DemoSettings,
    G,
    Group,
    KafkaSettings,
    MigrationSettings,
    RedisSettings,
    RetentionDatabaseTimeouts,
    RetentionSettings,
    TenantSettings,
    Variable,
    variables,
)
from easysmart.db import Database, migrate


def _read(group: type[G]) -> G:
    try:
        return group.from_env()
    except ConfigError as error:
        sys.exit(f"error: {error.message} (make targets set it from infra/local/local.env)")


def _database_url() -> str:
    return _read(DatabaseSettings).database_url


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
    mode, applied = migrate(_database_url(), _read(MigrationSettings).db_mode)
    print(f"==> database schema up to date ({mode} mode); applied: {', '.join(applied) or 'nothing new'}")
    if mode == "postgres":
        # Retention keeps them from now on; the first upload of a fresh stack needs them already.
        db = Database(_database_url(), 1)
        try:
            window = partitions.accepted_window(datetime.now(timezone.utc), _read(RetentionSettings).raw_retention_days)
            made = partitions.create_window(db, *window, _read(RetentionDatabaseTimeouts).partition_lock_timeout_s)
        finally:
            db.close()
        deferred = len(made["raw_partitions_creation_deferred"])
        left = f", {deferred} left to the retention function (telemetry_data busy)" if deferred else ""
        print(f"==> day partitions {window[0]}..{window[1]}: {len(made['raw_partitions_created'])} created{left}")


def cmd_tenant_create(args) -> None:
    args.timezone = args.timezone or _read(TenantSettings).default_timezone
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
    return args.password or _read(AccountSettings).esm_password or getpass.getpass(f"password for {args.username}: ")


def cmd_account_create(args) -> None:
    if args.if_missing:
        existing = _in_transaction(lambda c: accounts.existing_account(c, args.tenant, args.kind, args.username))
        if existing:
            print(f"account {args.username} ({existing}) already exists; nothing to do")
            return
    password = _password(args)
    account_id = _in_transaction(
        lambda c: accounts.create_account(
            c, args.tenant, args.kind, args.username, password, args.if_missing, args.role
        )
    )
    role = f", role {args.role or 'owner'}" if args.kind == "user" else ""
    print(f"{args.kind} account {args.username} ({account_id}) in tenant {args.tenant}{role}")


def _account_changed(username: str, state: AccountState, done: str) -> None:
    """Mirrors a committed change into Redis, where ingest and analytics read it; says so when that failed."""
    client = redis.Redis.from_url(_read(RedisSettings).redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        mirrored = mirror_state(client, state)
    finally:
        client.close()
    if not mirrored:
        sys.exit(
            f"error: account {username} {done} in the database, but Redis could not be updated: ingest and analytics"
            f" may admit its tokens for up to {STATE_TTL_S} s; run the command again once Redis is up"
        )
    print(f"account {username} {done}")


def cmd_account_block(args, blocked: bool = True) -> None:
    state = _in_transaction(lambda c: accounts.set_blocked(c, args.username, blocked))
    _account_changed(args.username, state, "blocked" if blocked else "unblocked")


def cmd_account_activate(args, active: bool) -> None:
    state = _in_transaction(lambda c: accounts.set_active(c, args.username, active))
    _account_changed(args.username, state, "activated" if active else "deactivated")


def cmd_account_password(args) -> None:
    password = _password(args)
    state = _in_transaction(lambda c: accounts.set_password(c, args.username, password))
    _account_changed(args.username, state, "has a new password")


def cmd_account_list(args) -> None:
    for tenant, username, kind, active, blocked, role in _in_transaction(
        lambda c: accounts.list_accounts(c, args.tenant)
    ):
        state = f"{'active' if active else 'inactive'}\t{'blocked' if blocked else ''}"
        print(f"{tenant}\t{username}\t{kind}\t{role or ''}\t{state}")


def cmd_seed_demo(args) -> None:
    demo = _read(DemoSettings)
    zone = _read(TenantSettings).default_timezone

    def seed(cursor):
        accounts.create_tenant(cursor, demo.demo_tenant, zone, if_missing=True)
        accounts.create_account(
            cursor, demo.demo_tenant, "device", demo.demo_device_user, demo.demo_device_password, if_missing=True
        )
        accounts.create_account(
            cursor, demo.demo_tenant, "user", demo.demo_admin_user, demo.demo_admin_password, if_missing=True
        )

    _in_transaction(seed)
    print(
        f"==> demo tenant {demo.demo_tenant!r}: device {demo.demo_device_user!r}, user {demo.demo_admin_user!r}"
        " (created if missing)"
    )


def cmd_demo(args) -> None:
    from easysmart.demo import run_demo

    demo = _read(DemoSettings)
    try:
        database_url: str | None = DatabaseSettings.from_env().database_url
    except ConfigError:
        database_url = None  # the demo then shows the API's answers only
    zone = _read(TenantSettings).default_timezone
    run_demo(
        demo.esm_base_url,
        demo.demo_device_user,
        demo.demo_device_password,
        zone,
        database_url,
        admin=(demo.demo_admin_user, demo.demo_admin_password),
    )


def cmd_dlq_replay(args) -> None:
    from easysmart.dlq import dead_letter_topic, replay

    kafka = _read(KafkaSettings)
    topic = args.topic or kafka.kafka_topic_raw
    report = replay(
        kafka.kafka_bootstrap_servers,
        dead_letter_topic(topic, kafka.kafka_topic_raw, kafka.kafka_topic_dlq),
        topic,
        limit=args.limit,
        dry_run=args.dry_run,
    )
    verb = "listed" if args.dry_run else "replayed"
    what = "claim check(s)" if topic == kafka.kafka_topic_raw else f"record(s) of {topic}"
    print(f"==> {report.replayed if not args.dry_run else report.listed} dead-lettered {what} {verb}")


def groups_read_by(source: str) -> list[type[Group]]:
    """The settings groups a module's code uses (an import alone does not count): the groups it reads,
    since services are given their groups and only entry points call from_env."""
    tree = ast.parse(source)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    return [group for group in Group.GROUPS if group.__name__ in used]


def variables_read_by(source: str, server: bool) -> list[Variable]:
    """What a module reads; with server, also what the function server reads (WORKERS, ...)."""
    read = [variable for group in groups_read_by(source) for variable in group.variables()]
    return read + list(SERVER_VARIABLES) if server else read


def cmd_config_vars(args) -> None:
    if args.function or args.source:
        path = args.root / "functions" / args.function / "main.py" if args.function else args.source
        try:
            listed = variables_read_by(path.read_text(), server=bool(args.function))
        except OSError as error:
            sys.exit(f"error: {error}")
    else:
        listed = variables()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": v.name,
                        "group": v.group,
                        "type": v.type,
                        "required": v.required,
                        "secret": v.secret,
                        "default": None if v.required else v.default_text(),
                        "description": v.description,
                    }
                    for v in listed
                ],
                indent=1,
            )
        )
        return
    for v in listed:
        status = "required" if v.required else f"optional, default {v.default_text()!r}"
        print(f"{v.name}\t{status}{', secret' if v.secret else ''}\t{v.group}: {v.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm", description="Easy Smart Monitor backend administration")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply pending database migrations").set_defaults(run=cmd_migrate)

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument(
        "--timezone", help="IANA zone in which the tenant's naive times are read (default: $DEFAULT_TIMEZONE)"
    )
    create.add_argument("--if-missing", action="store_true", help="do nothing if it exists")
    create.set_defaults(run=cmd_tenant_create)
    tenant.add_parser("list", help="list tenants").set_defaults(run=cmd_tenant_list)

    account = commands.add_parser("account", help="manage device and user accounts").add_subparsers(
        dest="action", required=True
    )
    create = account.add_parser(
        "create", help="create an account (password from --password, $ESM_PASSWORD or a prompt)"
    )
    create.add_argument("username")
    create.add_argument("--tenant", required=True)
    create.add_argument("--kind", choices=["device", "user"], required=True)
    create.add_argument("--password")
    create.add_argument("--role", choices=ROLE_NAMES, help="a user's role in the tenant (default: owner)")
    create.add_argument("--if-missing", action="store_true", help="do nothing if it exists")
    create.set_defaults(run=cmd_account_create)
    for action, blocked in (("block", True), ("unblock", False)):
        parser_ = account.add_parser(action, help=f"{action} an account")
        parser_.add_argument("username")
        parser_.set_defaults(run=lambda args, blocked=blocked: cmd_account_block(args, blocked))
    for action, active in (("deactivate", False), ("activate", True)):
        parser_ = account.add_parser(action, help=f"{action} an account")
        parser_.add_argument("username")
        parser_.set_defaults(run=lambda args, active=active: cmd_account_activate(args, active))
    password = account.add_parser(
        "set-password",
        aliases=["password"],
        help="set an account's password, e.g. for an owner who is locked out (from --password, $ESM_PASSWORD or a"
        " prompt)",
    )
    password.add_argument("username")
    password.add_argument("--password")
    password.set_defaults(run=cmd_account_password)
    listing = account.add_parser("list", help="list accounts")
    listing.add_argument("--tenant")
    listing.set_defaults(run=cmd_account_list)

    commands.add_parser("seed-demo", help="create the demo tenant and accounts if missing").set_defaults(
        run=cmd_seed_demo
    )
    commands.add_parser("demo", help="send a demo upload through the public API and show what was stored").set_defaults(
        run=cmd_demo
    )

    dlq = commands.add_parser("dlq", help="dead-letter queue").add_subparsers(dest="action", required=True)
    replay = dlq.add_parser("replay", help="move dead-lettered claim checks back to telemetry.raw")
    replay.add_argument(
        "--topic",
        help="whose dead letters: KAFKA_TOPIC_RAW's (claim checks, the default) or another routed topic's,"
        " replayed from <topic>.dlq (e.g. telemetry.stored, alerts.events)",
    )
    replay.add_argument("--limit", type=int, help="replay at most this many")
    replay.add_argument("--dry-run", action="store_true", help="list them only")
    replay.set_defaults(run=cmd_dlq_replay)

    config = commands.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    listing = config.add_parser("vars", help="the environment variables a function (or any module) reads")
    source = listing.add_mutually_exclusive_group()
    source.add_argument("--function", help="a functions/<name>/ folder: its main.py and the server it runs in")
    source.add_argument("--source", type=Path, help="a Python file, e.g. easysmart/bridges/kafka_source.py")
    listing.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
    listing.add_argument("--json", action="store_true", help="a JSON list, for tools/manifestcheck")
    listing.set_defaults(run=cmd_config_vars)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
