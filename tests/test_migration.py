"""Alembic: converting plain tables, columns on temporal tables, autogenerate (both backends)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, catalog, history
from temporal.clock import UTC
from temporal.migration import MigrationError, include_name

ROWS = 10_000


class Base(DeclarativeBase):
    pass


class Account(Temporal, Base):
    """The model of the `accounts` table after conversion."""

    __tablename__ = "accounts"
    __temporal_ttl__ = timedelta(days=7)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    score: Mapped[float | None] = mapped_column(sa.Float)


def _plain_accounts(engine: Engine, rows: int = ROWS) -> sa.Table:
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(100), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("score", sa.Float),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(accounts.insert(), [
            {"email": f"user{i}@example.com", "name": f"user {i}",
             "score": None if i % 7 == 0 else i / 3}
            for i in range(1, rows + 1)
        ])
    return accounts


def _ops(conn: sa.Connection) -> Operations:
    return Operations(MigrationContext.configure(conn))


def _diff(engine: Engine, metadata: sa.MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        return compare_metadata(context, metadata)


def test_make_temporal_keeps_every_row_current_then_records_history(engine: Engine) -> None:
    _plain_accounts(engine)
    with engine.connect() as conn:
        before = sorted(conn.execute(sa.text("SELECT id, email, name, score FROM accounts")))
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        _ops(conn).make_temporal("accounts", since=since, ttl=timedelta(days=7))

    with engine.connect() as conn:
        after = sorted(conn.execute(sa.text("SELECT id, email, name, score FROM accounts")))
        assert after == before  # every row survives, values untouched
        periods = conn.execute(select(Account.created_at, Account.expired_at).distinct()).all()
        assert periods == [(since, None)]  # ... and every row is current since `since`
        entry = catalog.registration(conn, "accounts")
        assert entry.key == ["id"] and entry.ttl == timedelta(days=7)

    # From now on, writes are versioned through the model.
    with Session(engine) as session:
        account = session.get(Account, 42)
        assert account is not None
        account.name = "renamed"
        session.add(Account(email="new@example.com", name="new"))
        session.commit()
        new_id = session.scalars(select(Account.id).where(Account.email == "new@example.com")
                                 ).one()
        assert new_id == ROWS + 1  # the id keeps counting from the existing rows
        versions = history(session, Account, 42)
        assert [v.name for v in versions] == ["user 42", "renamed"]
        assert versions[0].created_at == since
        # unique among current rows: a second current row with the same email is refused
        session.add(Account(email="user7@example.com", name="dup"))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()

    # The converted table is exactly what the model declares: nothing to autogenerate.
    assert _diff(engine, Base.metadata) == []


def test_make_plain_keeps_current_rows_and_restores_constraints(engine: Engine) -> None:
    _plain_accounts(engine, rows=50)
    with engine.begin() as conn:
        _ops(conn).make_temporal("accounts")
    with Session(engine) as session:
        for account in session.scalars(select(Account).where(Account.id <= 10)):
            account.score = -1.0
        session.commit()
    with engine.begin() as conn:
        _ops(conn).make_plain("accounts")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        columns = {c["name"] for c in inspector.get_columns("accounts")}
        assert columns == {"id", "email", "name", "score"}
        assert inspector.get_pk_constraint("accounts")["constrained_columns"] == ["id"]
        rows = conn.execute(sa.text("SELECT id, score FROM accounts ORDER BY id")).all()
        assert len(rows) == 50 and all(score == -1.0 for _, score in rows[:10])
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
            conn.execute(sa.text("INSERT INTO accounts (id, email, name) "
                                 "VALUES (99, 'user1@example.com', 'dup')"))
        assert catalog.registrations(conn) == []


def test_add_temporal_column_fills_history_explicitly(engine: Engine) -> None:
    Base.metadata.create_all(engine, tables=[Account.__table__])  # type: ignore[list-item]
    with Session(engine) as session:
        session.add_all([Account(id=1, email="a@x", name="a"), Account(id=2, email="b@x",
                                                                         name="b")])
        session.commit()
    with Session(engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        account.name = "a2"
        session.commit()

    column = sa.Column("tier", sa.String(20), nullable=False)
    with engine.begin() as conn, pytest.raises(MigrationError, match="fill="):
        _ops(conn).add_temporal_column("accounts", column)
    with engine.connect() as conn:  # refused: nothing changed
        assert "tier" not in {c["name"] for c in sa.inspect(conn).get_columns("accounts")}

    with engine.begin() as conn:
        _ops(conn).add_temporal_column("accounts", column, fill="basic", history_fill="legacy")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, name, tier, expired_at IS NULL FROM accounts ORDER BY id, created_at"
        )).all()
        assert [tuple(r) for r in rows] == [(1, "a", "legacy", 0), (1, "a2", "basic", 1),
                                            (2, "b", "basic", 1)]
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
            conn.execute(sa.text("UPDATE accounts SET tier = NULL WHERE id = 2"))
        assert catalog.registration(conn, "accounts").ttl == timedelta(days=7)  # kept

    with engine.begin() as conn:
        _ops(conn).drop_temporal_column("accounts", "tier")
        with pytest.raises(MigrationError, match="key or period"):
            _ops(conn).drop_temporal_column("accounts", "id")
    with engine.connect() as conn:
        assert "tier" not in {c["name"] for c in sa.inspect(conn).get_columns("accounts")}
        assert conn.execute(select(func.count()).select_from(Account)).scalar_one() == 3
    assert _diff(engine, Base.metadata) == []


def test_conversion_refuses_bad_input_and_changes_nothing(engine: Engine) -> None:
    md = sa.MetaData()
    parent = sa.Table("parents", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("children", md, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("parent_id", sa.ForeignKey("parents.id")))
    sa.Table("loose", md, sa.Column("x", sa.Integer))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(parent.insert(), [{"id": 1}])
    with engine.begin() as conn:
        ops = _ops(conn)
        with pytest.raises(MigrationError, match="no table named"):
            ops.make_temporal("nope")
        with pytest.raises(MigrationError, match="foreign key"):
            ops.make_temporal("parents")
        with pytest.raises(MigrationError, match="no primary key"):
            ops.make_temporal("loose")
        with pytest.raises(MigrationError, match="in the future"):
            ops.make_temporal("children", since=datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(MigrationError, match="not temporal"):
            ops.make_plain("parents")
    with engine.connect() as conn:
        assert {c["name"] for c in sa.inspect(conn).get_columns("parents")} == {"id"}
        assert catalog.registrations(conn) == []


# -- autogenerate through a real Alembic environment ------------------------------------

ENV_PY = '''
from alembic import context
import sqlalchemy as sa
from temporal.migration import alembic_options
from tests.test_migration import Base

config = context.config
engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      **alembic_options())
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''


def _app_alembic(tmp_path: Path, url: URL) -> Config:
    command.init(Config(str(tmp_path / "alembic.ini")), str(tmp_path / "app_migrations"))
    (tmp_path / "app_migrations" / "env.py").write_text(ENV_PY)
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "app_migrations"))
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False))
    return config


def _upgrade_body(path: str) -> str:
    text = Path(path).read_text()
    return text[text.index("def upgrade()"):text.index("def downgrade()")]


def test_autogenerate_creates_registers_and_then_has_nothing_to_do(
        tmp_path: Path, url: URL) -> None:
    config = _app_alembic(tmp_path, url)
    first = command.revision(config, "accounts", autogenerate=True)
    assert first is not None and not isinstance(first, list)
    body = _upgrade_body(first.path)
    assert "op.create_table('accounts'" in body
    assert "'temporal': True" in body and "'temporal_ttl': 604800" in body
    assert "postgresql_where" in body and "sqlite_where" in body
    assert "sa.DateTime(timezone=True)" in body and "temporal.types" not in body

    command.upgrade(config, "head")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            entry = catalog.registration(conn, "accounts")  # registered by the migration
            assert entry.key == ["id"] and entry.ttl == timedelta(days=7)
        second = command.revision(config, "nothing", autogenerate=True)
        assert second is not None and not isinstance(second, list)
        assert _upgrade_body(second.path).split() == ["def", "upgrade()", "->", "None:",
                                                      '"""Upgrade', 'schema."""', "#",
                                                      "###", "commands", "auto", "generated",
                                                      "by", "Alembic", "-", "please", "adjust!",
                                                      "###", "pass", "#", "###", "end",
                                                      "Alembic", "commands", "###"]
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("accounts")
            assert catalog.registrations(conn) == []  # dropping unregisters
    finally:
        engine.dispose()


def test_offline_sql_mode_renders_create_table_and_refuses_conversion() -> None:
    import io

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name="postgresql",
                                         opts={"as_sql": True, "output_buffer": buffer})
    ops = Operations(context)
    table = Account.__table__
    ops.create_table(table.name, *[c._copy() for c in table.c],  # type: ignore[attr-defined]
                     info=dict(table.info))  # type: ignore[attr-defined]
    assert "CREATE TABLE accounts" in buffer.getvalue()  # no connection: not registered
    with pytest.raises(MigrationError, match="offline"):
        ops.make_temporal("accounts")
