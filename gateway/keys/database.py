"""Where managed keys, teams and their spend are kept: SQLite (embedded) or PostgreSQL (shared).

Nothing here runs on a request's path: admin routes, the cache's reloads and spend flushes call
it from a thread. Every method is one short transaction; every change to a key or a team bumps
``managed_revision`` in the same transaction, which is how other processes learn of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg

from common.postgres import unreachable, where
from gateway.keys.migrations import migrations
from gateway.keys.records import KEY_COLUMNS, TEAM_COLUMNS, ManagedKey, Team, column_values, key_from_row, team_from_row

T = TypeVar("T")


@dataclass(frozen=True)
class Many:
    """One statement run for each of ``rows`` (one round trip for them all where the driver can)."""

    sql: str
    rows: Sequence[Sequence[Any]]


Statement = tuple[str, Sequence[Any]] | Many
Budgets = dict[str, tuple[float, float | None]]  # (spend, budget_reset_at) by key token or team id
CONNECT_TIMEOUT_S = 5
MIGRATION_LOCK = 0x6B657973  # one PostgreSQL client migrates at a time
BUSY_TIMEOUT_S = 30


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; the message says where, never with credentials."""


class Conflict(Exception):
    """A write broke a rule the tables keep: an alias taken, a team that does not exist."""


@dataclass(frozen=True)
class SpendRow:
    """What one key spent on one model group on one day (UTC), within one flush."""

    day: str
    token: str
    team_id: str
    model_group: str
    spend: float
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SpendLog:
    request_id: str
    token: str
    team_id: str
    model_group: str
    spend: float
    prompt_tokens: int
    completion_tokens: int
    started_at: float


class _Connection(Protocol):
    def run(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]: ...

    def close(self) -> None: ...


class _SQLite:
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(
                f"cannot open {path}: {exc}; set DATABASE_URL (PostgreSQL) or GATEWAY_DATA_DIR to a writable folder"
            ) from None

    def run(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                results: list[list[tuple[Any, ...]]] = []
                for statement in statements:
                    if isinstance(statement, Many):
                        self._db.executemany(statement.sql, statement.rows)
                        results.append([])
                    else:
                        results.append(self._db.execute(statement[0], tuple(statement[1])).fetchall())
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return results
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(f"the keys database cannot be used: {exc}") from None

    def close(self) -> None:
        self._db.close()


class _Postgres:
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        return self._conn

    def _once(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        conn = self._connect()
        results: list[list[tuple[Any, ...]]] = []
        with conn.transaction():
            for statement in statements:
                if isinstance(statement, Many):
                    with conn.cursor() as many:
                        many.executemany(statement.sql.replace("?", "%s").encode(), statement.rows)
                    results.append([])
                    continue
                cursor = conn.execute(statement[0].replace("?", "%s").encode(), tuple(statement[1]))
                results.append(cursor.fetchall() if cursor.description else [])
        return results

    def run(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        try:
            try:
                return self._once(statements)
            except psycopg.OperationalError:
                if self._conn is not None and not self._conn.broken and not self._conn.closed:
                    raise
                self._conn = None  # a connection lost on the way: once more on a new one
                return self._once(statements)
        except psycopg.errors.IntegrityError as exc:
            raise Conflict((str(exc).strip().splitlines() or ["conflict"])[0]) from None
        except psycopg.OperationalError as exc:
            self._conn = None
            raise DatabaseUnavailable(unreachable(self._url, exc)) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def describe(url: str) -> str:
    """Where ``url`` points, for logs (no credentials)."""
    if url.startswith("sqlite:///"):
        return url
    return f"postgresql://{where(url)}/{psycopg.conninfo.conninfo_to_dict(url).get('dbname', '')}"


class KeyDatabase:
    """The managed-keys tables behind ``url``: ``sqlite:///path`` or ``postgresql://...``."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            self._conn: _Connection = _SQLite(Path(url.removeprefix("sqlite:///")))
            self.shared = False
        elif url.startswith(("postgresql://", "postgres://")):
            self._conn = _Postgres(url)
            self.shared = True
        else:
            raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
        self._lock = threading.Lock()
        self._migrate()

    def _run(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        with self._lock:
            return self._conn.run(statements)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._run([(sql, params)])[0]

    def _migrate(self) -> None:
        statements: list[Statement] = []
        if self.shared:
            statements.append(("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,)))
        statements.append(
            ("CREATE TABLE IF NOT EXISTS managed_migrations (version INTEGER PRIMARY KEY, name TEXT)", ())
        )
        self._run(statements)
        applied = {row[0] for row in self._query("SELECT version FROM managed_migrations")}
        for version, name, sql in migrations():
            if version in applied:
                continue
            # Under the lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite); every step is idempotent, so a
            # second process that read the same versions applies nothing twice.
            steps: list[Statement] = statements[:1] if self.shared else []
            steps += [(part, ()) for part in _statements(sql)]
            steps.append(
                ("INSERT INTO managed_migrations VALUES (?, ?) ON CONFLICT (version) DO NOTHING", (version, name))
            )
            self._run(steps)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # Reads the cache makes.

    def revision(self) -> int:
        return int(self._query("SELECT revision FROM managed_revision WHERE id = 1")[0][0])

    def load(self) -> tuple[int, list[Team], list[ManagedKey]]:
        """Every team and key with the revision they are as of (one transaction)."""
        revision, teams, keys = self._run(
            [
                ("SELECT revision FROM managed_revision WHERE id = 1", ()),
                (f"SELECT {', '.join(TEAM_COLUMNS)} FROM managed_teams", ()),  # noqa: S608
                (f"SELECT {', '.join(KEY_COLUMNS)} FROM managed_keys", ()),  # noqa: S608
            ]
        )
        return int(revision[0][0]), [team_from_row(r) for r in teams], [key_from_row(r) for r in keys]

    # (spend, budget_reset_at) of every budgeted key and team that spent in its window (one not listed spent nothing).
    _BUDGETS: tuple[Statement, Statement] = (
        ("SELECT token, spend, budget_reset_at FROM managed_keys WHERE max_budget IS NOT NULL AND spend > 0", ()),
        ("SELECT team_id, spend, budget_reset_at FROM managed_teams WHERE max_budget IS NOT NULL AND spend > 0", ()),
    )

    @staticmethod
    def _budgets(keys: list[tuple[Any, ...]], teams: list[tuple[Any, ...]]) -> tuple[Budgets, Budgets]:
        return {r[0]: (float(r[1]), r[2]) for r in keys}, {r[0]: (float(r[1]), r[2]) for r in teams}

    # Writes the admin API makes.

    def _bump(self) -> Statement:
        return ("UPDATE managed_revision SET revision = revision + 1 WHERE id = 1", ())

    def insert(self, record: ManagedKey | Team) -> None:
        table, columns = _table(record)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        self._run([(sql, column_values(record, columns)), self._bump()])

    def update(self, record: ManagedKey | Team, changed: Iterable[str]) -> None:
        """Write ``changed`` fields of ``record`` (found by its id)."""
        table, _ = _table(record)
        names = [*changed, "updated_at"]
        assignments = ", ".join(f"{name} = ?" for name in names)
        id_column = "token" if isinstance(record, ManagedKey) else "team_id"
        sql = f"UPDATE {table} SET {assignments} WHERE {id_column} = ?"  # noqa: S608
        self._run([(sql, [*column_values(record, names), getattr(record, id_column)]), self._bump()])

    def delete_keys(self, tokens: Sequence[str]) -> list[str]:
        """Delete these keys; the ones that existed."""
        if not tokens:
            return []
        marks = ", ".join("?" for _ in tokens)
        found, _, _ = self._run(
            [
                (f"SELECT token FROM managed_keys WHERE token IN ({marks})", tokens),  # noqa: S608
                (f"DELETE FROM managed_keys WHERE token IN ({marks})", tokens),  # noqa: S608
                self._bump(),
            ]
        )
        return [r[0] for r in found]

    def delete_teams(self, team_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete these teams and their keys; (the teams that existed, the keys deleted with them)."""
        if not team_ids:
            return [], []
        marks = ", ".join("?" for _ in team_ids)
        teams, keys, _, _, _ = self._run(
            [
                (f"SELECT team_id FROM managed_teams WHERE team_id IN ({marks})", team_ids),  # noqa: S608
                (f"SELECT token FROM managed_keys WHERE team_id IN ({marks})", team_ids),  # noqa: S608
                (f"DELETE FROM managed_keys WHERE team_id IN ({marks})", team_ids),  # noqa: S608
                (f"DELETE FROM managed_teams WHERE team_id IN ({marks})", team_ids),  # noqa: S608
                self._bump(),
            ]
        )
        return [r[0] for r in teams], [r[0] for r in keys]

    def key(self, token: str) -> ManagedKey | None:
        rows = self._query(f"SELECT {', '.join(KEY_COLUMNS)} FROM managed_keys WHERE token = ?", (token,))  # noqa: S608
        return key_from_row(rows[0]) if rows else None

    def key_by_alias(self, alias: str) -> ManagedKey | None:
        sql = f"SELECT {', '.join(KEY_COLUMNS)} FROM managed_keys WHERE key_alias = ?"  # noqa: S608
        rows = self._query(sql, (alias,))
        return key_from_row(rows[0]) if rows else None

    def team(self, team_id: str) -> Team | None:
        sql = f"SELECT {', '.join(TEAM_COLUMNS)} FROM managed_teams WHERE team_id = ?"  # noqa: S608
        rows = self._query(sql, (team_id,))
        return team_from_row(rows[0]) if rows else None

    def list_keys(
        self, team_id: str | None, key_alias: str | None, page: int, size: int
    ) -> tuple[list[ManagedKey], int]:
        """One page of keys (oldest first) and how many match in all."""
        where, params = _filters({"team_id": team_id, "key_alias": key_alias})
        counted, rows = self._run(
            [
                (f"SELECT COUNT(*) FROM managed_keys{where}", params),  # noqa: S608
                (
                    f"SELECT {', '.join(KEY_COLUMNS)} FROM managed_keys{where} "  # noqa: S608
                    "ORDER BY created_at, token LIMIT ? OFFSET ?",
                    [*params, size, (page - 1) * size],
                ),
            ]
        )
        return [key_from_row(r) for r in rows], int(counted[0][0])

    def list_teams(self) -> list[Team]:
        sql = f"SELECT {', '.join(TEAM_COLUMNS)} FROM managed_teams ORDER BY created_at, team_id"  # noqa: S608
        return [team_from_row(r) for r in self._query(sql)]

    def team_keys(self, team_id: str) -> list[ManagedKey]:
        sql = f"SELECT {', '.join(KEY_COLUMNS)} FROM managed_keys WHERE team_id = ? ORDER BY created_at"  # noqa: S608
        return [key_from_row(r) for r in self._query(sql, (team_id,))]

    # Spend.

    def add_spend(self, rows: Sequence[SpendRow], logs: Sequence[SpendLog]) -> tuple[Budgets, Budgets]:
        """Add one flush's spend (to each key's and team's window, by day, and its request logs), and
        read the budgets' totals back, in one transaction."""
        keys: dict[str, float] = {}
        teams: dict[str, float] = {}
        for row in rows:
            keys[row.token] = keys.get(row.token, 0.0) + row.spend
            if row.team_id:
                teams[row.team_id] = teams.get(row.team_id, 0.0) + row.spend
        statements: list[Statement] = [
            Many(
                "INSERT INTO managed_spend_daily (day, token, team_id, model_group, spend, requests, prompt_tokens, "
                "completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, token, model_group, team_id) "
                "DO UPDATE SET spend = managed_spend_daily.spend + excluded.spend, "
                "requests = managed_spend_daily.requests + excluded.requests, "
                "prompt_tokens = managed_spend_daily.prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = managed_spend_daily.completion_tokens + excluded.completion_tokens",
                [
                    (
                        r.day,
                        r.token,
                        r.team_id,
                        r.model_group,
                        r.spend,
                        r.requests,
                        r.prompt_tokens,
                        r.completion_tokens,
                    )
                    for r in rows
                ],
            ),
            # Keys and teams in a fixed order, so that concurrent flushes never wait on each other in a cycle.
            Many(
                "UPDATE managed_keys SET spend = spend + ? WHERE token = ?",
                [(amount, token) for token, amount in sorted(keys.items()) if amount],
            ),
            Many(
                "UPDATE managed_teams SET spend = spend + ? WHERE team_id = ?",
                [(amount, team) for team, amount in sorted(teams.items()) if amount],
            ),
            Many(
                "INSERT INTO managed_spend_logs (request_id, token, team_id, model_group, spend, prompt_tokens, "
                "completion_tokens, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
                [
                    (
                        g.request_id,
                        g.token,
                        g.team_id,
                        g.model_group,
                        g.spend,
                        g.prompt_tokens,
                        g.completion_tokens,
                        g.started_at,
                    )
                    for g in logs
                ],
            ),
        ]
        statements = [s for s in statements if not isinstance(s, Many) or s.rows]
        *_, keys_read, teams_read = self._run([*statements, *self._BUDGETS])
        return self._budgets(keys_read, teams_read)

    def reset_budgets(self, now: float, next_reset: Callable[[str], float]) -> int:
        """Start a new window for every key and team whose window ended: spend back to zero. Each
        row is reset once whichever process gets there first (its old reset time is the guard)."""
        due_keys, due_teams = self._run(
            [
                ("SELECT token, budget_duration, budget_reset_at FROM managed_keys WHERE budget_reset_at <= ?", (now,)),
                (
                    "SELECT team_id, budget_duration, budget_reset_at FROM managed_teams WHERE budget_reset_at <= ?",
                    (now,),
                ),
            ]
        )
        statements: list[Statement] = []
        for table, column, due in (("managed_keys", "token", due_keys), ("managed_teams", "team_id", due_teams)):
            for ident, duration, reset_at in due:
                statements.append(
                    (
                        f"UPDATE {table} SET spend = 0, budget_reset_at = ? "  # noqa: S608
                        f"WHERE {column} = ? AND budget_reset_at = ?",
                        (now + next_reset(duration), ident, reset_at),
                    )
                )
        if statements:  # every process reloads, and sees the new windows
            self._run([*statements, self._bump()])
        return len(statements)

    def daily_spend(
        self, start_day: str, end_day: str, token: str | None, team_id: str | None
    ) -> list[tuple[str, str, str, str, float, int, int, int]]:
        where, params = _filters({"token": token, "team_id": team_id})
        joiner = " AND " if where else " WHERE "
        sql = (
            "SELECT day, token, team_id, model_group, spend, requests, prompt_tokens, completion_tokens "  # noqa: S608
            f"FROM managed_spend_daily{where}{joiner}day >= ? AND day <= ? ORDER BY day, token, model_group"
        )
        rows = self._query(sql, [*params, start_day, end_day])
        return [(r[0], r[1], r[2], r[3], float(r[4]), int(r[5]), int(r[6]), int(r[7])) for r in rows]

    def spend_logs(
        self, start: float, end: float, token: str | None, request_id: str | None, limit: int
    ) -> list[SpendLog]:
        where, params = _filters({"token": token, "request_id": request_id})
        joiner = " AND " if where else " WHERE "
        sql = (
            "SELECT request_id, token, team_id, model_group, spend, prompt_tokens, completion_tokens, "  # noqa: S608
            f"started_at FROM managed_spend_logs{where}{joiner}started_at >= ? AND started_at < ? "
            "ORDER BY started_at LIMIT ?"
        )
        rows = self._query(sql, [*params, start, end, limit])
        return [SpendLog(r[0], r[1], r[2], r[3], float(r[4]), int(r[5]), int(r[6]), float(r[7])) for r in rows]


def _table(record: ManagedKey | Team) -> tuple[str, tuple[str, ...]]:
    return ("managed_keys", KEY_COLUMNS) if isinstance(record, ManagedKey) else ("managed_teams", TEAM_COLUMNS)


def _filters(values: dict[str, str | None]) -> tuple[str, list[Any]]:
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), list(given.values())


def _statements(sql: str) -> list[str]:
    """The statements of a migration file (none of ours has a ``;`` inside a literal)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
