"""Real databases for every test: a SQLite file and a fresh PostgreSQL database.

PostgreSQL comes from pytest-postgresql on a running server
(``TEMPORAL_TEST_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``):
each test gets a new database cloned from a template, dropped afterwards. Names
carry the process id, so runs side by side on one shared server never collide. With
no server, PostgreSQL tests skip with the reason - except under ``CI=true``,
where they fail, because CI must never pass on skipped databases.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from pytest_postgresql import factories
from sqlalchemy import URL, Engine, create_engine, make_url

PG_URL = make_url(os.environ.get("TEMPORAL_TEST_PG_URL",
                                  "postgresql://postgres@127.0.0.1:5432/test"))
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_problem() -> str | None:
    try:
        psycopg.connect(host=PG_URL.host, port=PG_URL.port or 5432, user=PG_URL.username,
                        password=PG_URL.password, dbname=PG_URL.database,
                        connect_timeout=3).close()
    except psycopg.Error as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return (f"no PostgreSQL at {PG_URL.render_as_string(hide_password=True)} "
                f"({first_line}); set TEMPORAL_TEST_PG_URL")
    return None


_PROBLEM = _server_problem()

postgresql_server = factories.postgresql_noproc(
    host=PG_URL.host, port=PG_URL.port or 5432, user=PG_URL.username,
    password=PG_URL.password or "", dbname=f"temporal_tests_{os.getpid()}_{secrets.token_hex(3)}",
    maintenance_dbname=PG_URL.database,
)
postgresql_db = factories.postgresql("postgresql_server")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> URL:
    """URL of a fresh, empty PostgreSQL database for this test."""
    if _PROBLEM is not None:
        if ON_CI:
            pytest.fail(f"CI requires PostgreSQL: {_PROBLEM}")
        pytest.skip(_PROBLEM)
    conn = request.getfixturevalue("postgresql_db")
    return URL.create("postgresql+psycopg", username=PG_URL.username, password=PG_URL.password,
                      host=PG_URL.host, port=PG_URL.port or 5432, database=conn.info.dbname)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> URL:
    """URL of a fresh SQLite file for this test."""
    return make_url(f"sqlite:///{tmp_path}/test.db")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> URL:
    """Both backends, one after the other."""
    name = "pg_url" if request.param == "postgresql" else "sqlite_url"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def make_engine(url: URL) -> Engine:
    return create_engine(url)


@pytest.fixture
def engine(url: URL) -> Iterator[Engine]:
    e = make_engine(url)
    yield e
    e.dispose()


@pytest.fixture
def pg_engine(pg_url: URL) -> Iterator[Engine]:
    e = make_engine(pg_url)
    yield e
    e.dispose()
