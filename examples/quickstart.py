"""Quickstart: a versioned model, a few changes, and reads back in time.

Run it: ``python examples/quickstart.py [DATABASE_URL]`` (default: a SQLite file).
It checks its own results and exits non-zero if anything is off.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sqlalchemy import String, create_engine, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, as_of, history, transaction_time


class Base(DeclarativeBase):
    pass


class Customer(Temporal, Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(20), default="basic")


def main(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    with Session(engine) as session, session.begin():  # insert: version 1
        session.add(Customer(id=1, name="Ada"))
        signed_up = transaction_time(session)

    with Session(engine) as session, session.begin():  # update: version 2
        session.get(Customer, 1).tier = "gold"

    with Session(engine) as session, session.begin():  # bulk update: version 3
        session.execute(update(Customer).where(Customer.tier == "gold").values(tier="platinum"))

    with Session(engine) as session:
        now = session.get(Customer, 1)
        then = session.get(Customer, 1, options=[as_of(signed_up)])
        print(f"now: {now.tier}; at sign-up: {then.tier}")
        assert (now.tier, then.tier) == ("platinum", "basic")

        for v in history(session, Customer, 1):
            print(f"  {v.tier:9} from {v.created_at:%H:%M:%S.%f} to "
                  f"{v.expired_at.strftime('%H:%M:%S.%f') if v.expired_at else 'now'}")
        assert [v.tier for v in history(session, Customer, 1)] == ["basic", "gold", "platinum"]

    with Session(engine) as session, session.begin():  # delete: history stays
        session.delete(session.get(Customer, 1))
    with Session(engine) as session:
        assert session.scalars(select(Customer)).all() == []
        assert session.get(Customer, 1, options=[as_of(signed_up)]).tier == "basic"
    engine.dispose()
    print("quickstart: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(f"sqlite:///{Path(tmp) / 'quickstart.db'}")
