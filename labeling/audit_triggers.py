"""Database triggers that keep the audit trail append-only: every UPDATE and DELETE of
``labeling_auditevent`` fails, whoever sends it (the ORM, a raw query, a database shell).

:class:`labeling.models.AuditEvent` refuses changes in Python too; the triggers cover what
bypasses the model. They are installed by the migration that introduced them and again after
every ``migrate`` (``post_migrate``, see :mod:`labeling.apps`): SQLite drops a table's
triggers whenever a migration rebuilds the table. SQLite and PostgreSQL are covered; on
PostgreSQL TRUNCATE is refused too. Other databases get no trigger.
"""

from __future__ import annotations

TABLE = "labeling_auditevent"

_SQLITE_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit events are immutable: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit events are never deleted: DELETE refused'); END""",
]
_SQLITE_REMOVE = [f"DROP TRIGGER IF EXISTS {TABLE}_no_update", f"DROP TRIGGER IF EXISTS {TABLE}_no_delete"]

_POSTGRESQL_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit events are immutable: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END $$""",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_change ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_refuse()""",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_refuse()""",
]
_POSTGRESQL_REMOVE = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_change ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_refuse()",
]

INSTALL = {"sqlite": _SQLITE_INSTALL, "postgresql": _POSTGRESQL_INSTALL}
REMOVE = {"sqlite": _SQLITE_REMOVE, "postgresql": _POSTGRESQL_REMOVE}


def _execute(connection, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def install(connection) -> None:
    """Install (or re-install) the triggers on ``connection``'s database, if its table exists."""
    if TABLE in connection.introspection.table_names():
        _execute(connection, INSTALL.get(connection.vendor, []))


def remove(connection) -> None:
    """Drop the triggers: for tooling that must empty the table (a test database's flush)."""
    if TABLE in connection.introspection.table_names():
        _execute(connection, REMOVE.get(connection.vendor, []))


def installed(connection) -> set[str]:
    """The names of this module's triggers present on ``connection``'s database."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE])
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", [TABLE])
        else:
            return set()
        return {row[0] for row in cursor.fetchall()}


def on_post_migrate(sender, using, **kwargs) -> None:
    from django.db import connections

    install(connections[using])
