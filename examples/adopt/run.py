"""Adopting temporal in an existing app, with its own Alembic history.

Run it: ``python examples/adopt/run.py [DATABASE_URL]`` (default: a SQLite file).

1. ``alembic upgrade 0001``: the app as it was, a plain ``products`` table,
   filled with rows.
2. ``alembic upgrade head``: revision 0002 makes ``products`` temporal in
   place and adds a column, with an explicit value for existing rows.
3. The model (``models.py``, now with the ``Temporal`` mixin) writes
   versions; ``history()`` shows them; ``temporal db status`` lists the table.
4. Autogenerate finds nothing to do: the migrated table is what the model says.
5. ``alembic downgrade 0001`` undoes it, keeping every current row.

It checks its own results and exits non-zero if anything is off.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # env.py imports models.py, as in an application

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from models import Base, Product  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from temporal import catalog, history  # noqa: E402
from temporal.migration import alembic_options  # noqa: E402

ROWS = 1000


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def main(url: str) -> None:
    engine = sa.create_engine(url)
    config = alembic_config(url)
    with engine.begin() as conn:  # start clean (a previous run may have left tables)
        for name in ("products", "alembic_version"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    # 1. The app before temporal.
    command.upgrade(config, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO products (sku, name, price) VALUES (:s, :n, :p)"),
                     [{"s": f"SKU-{i:04d}", "n": f"product {i}", "p": 9.99 + i}
                      for i in range(1, ROWS + 1)])

    # 2. Adopt temporal.
    command.upgrade(config, "head")
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Product)) == ROWS
        first = session.get(Product, 1)
        assert first is not None and first.currency == "EUR" and first.expired_at is None
        print(f"converted {ROWS} rows; all current since {first.created_at:%Y-%m-%d %H:%M:%S}")

    # 3. From now on every change is a version.
    with Session(engine) as session, session.begin():
        product = session.get(Product, 1)
        assert product is not None
        product.price = 12.50
    with Session(engine) as session, session.begin():
        session.add(Product(sku="SKU-NEW", name="new product", price=1.0, currency="USD"))
    with Session(engine) as session:
        prices = [v.price for v in history(session, Product, 1)]
        assert prices == [10.99, 12.5], prices
        print(f"product 1 has {len(prices)} versions: prices {prices}")
        new = session.scalars(sa.select(Product).where(Product.sku == "SKU-NEW")).one()
        assert new.id == ROWS + 1
    with engine.connect() as conn:
        entry = catalog.registration(conn, "products")
        assert entry.key == ["id"] and entry.ttl is not None and entry.ttl.days == 365
        print(f"registered: products, key {entry.key}, ttl {entry.ttl.days} days")

    # 4. Nothing left for autogenerate.
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=alembic_options())
        diff = compare_metadata(context, Base.metadata)
        assert diff == [], diff
        print("autogenerate: no changes")

    # 5. And back.
    command.downgrade(config, "0001")
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("products")}
        assert columns == {"id", "sku", "name", "price"}, columns
        rows = conn.execute(sa.text("SELECT price FROM products WHERE id = 1")).scalars().all()
        assert [float(p) for p in rows] == [12.5]  # the current version stayed
        assert conn.execute(sa.text("SELECT count(*) FROM products")).scalar_one() == ROWS + 1
        assert catalog.registrations(conn) == []
        print("downgraded: products is plain again, current rows kept")
    engine.dispose()
    print("adopt: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(f"sqlite:///{Path(folder) / 'adopt.db'}")
