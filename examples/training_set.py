"""A leak-free training set: label events joined to features as of each event.

Run it: ``python examples/training_set.py [DATABASE_URL]`` (default: a SQLite file).
Accounts change plan over time; churn labels are recorded in a plain table.
Joining the labels to the *current* accounts leaks the future into training
(an account that churned after downgrading looks like it churned on the cheap
plan all along); the point-in-time join gives each label the account as it was
when the label was observed. Then the change feed lists what changed since the
training set was made, for an incremental update. It checks its own results.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

from sqlalchemy import String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, changes, export, iter_changes, transaction_time, verify


class Base(DeclarativeBase):
    pass


class Account(Temporal, Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan: Mapped[str] = mapped_column(String(20))
    seats: Mapped[int]


def main(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS churn_labels"))
        conn.execute(text("CREATE TABLE churn_labels (account_id INTEGER, observed_at "
                          "VARCHAR(40), churned INTEGER)"))
    Base.metadata.create_all(engine)

    with Session(engine) as session, session.begin():
        session.add_all([Account(id=1, plan="pro", seats=10), Account(id=2, plan="pro", seats=3)])
        january = transaction_time(session)
    with Session(engine) as session, session.begin():  # label observed while still on pro
        session.get(Account, 1).seats = 12
        february = transaction_time(session)
    with Session(engine) as session, session.begin():  # later: account 1 downgrades
        session.get(Account, 1).plan = "free"
        march = transaction_time(session)

    with engine.begin() as conn:  # labels: the user's own, plain table
        conn.execute(text("INSERT INTO churn_labels VALUES (1, :t, 1), (2, :t, 0)"),
                     {"t": february.isoformat()})

    scratch = tempfile.TemporaryDirectory(prefix="temporal-training-")  # gone at the end
    out = Path(scratch.name)
    observed = ("observed_at" if engine.dialect.name == "sqlite"
                else "CAST(observed_at AS timestamptz) AS observed_at")
    manifest = export(engine, out / "train", as_of=march, name="examples",
                      spine_query=f"SELECT account_id, {observed}, churned FROM churn_labels",
                      at="observed_at", join={"accounts": "account_id"})
    with open(out / "train/examples/part-00000.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        print(f"account {row['account_id']} churned={row['churned']}: plan "
              f"{row['accounts.plan']}, {row['accounts.seats']} seats when observed")
    # As of February, account 1 was still on "pro" with 12 seats: no leak of March's "free".
    assert [(r["accounts.plan"], r["accounts.seats"]) for r in rows] == [("pro", "12"),
                                                                        ("pro", "3")]
    assert manifest.spine is not None and manifest.unversioned == ["churn_labels"]
    assert verify(out / "train", engine).ok

    # The same spine as a file: its sha256 goes into the manifest, a copy into the export.
    spine = out / "labels.csv"
    spine.write_text(f"account_id,observed_at,churned\n1,{february.isoformat()},1\n")
    export(engine, out / "from-file", as_of=march, spine=spine, at="observed_at",
           join={"accounts": "account_id"})
    assert verify(out / "from-file", engine).ok

    # What changed since the training set's labels: the feed for an incremental update.
    feed = changes(engine, out / "feed", since=february, until=march, tables=["accounts"])
    with Session(engine) as session:
        kinds = [(c.change_type, c.values["plan"])
                 for c in iter_changes(session, Account, since=february, until=march)]
    print(f"changes in (February, March]: {kinds}")
    assert kinds == [("update_preimage", "pro"), ("update_postimage", "free")]
    assert feed.rows == 2 and verify(out / "feed", engine).ok
    assert january < february
    engine.dispose()
    scratch.cleanup()
    print("training_set: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="temporal-training-") as folder:
            main(f"sqlite:///{folder}/training.db")
