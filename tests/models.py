"""Models shared by the tests: temporal ones with relationships, a composite key, a plain one."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from temporal import Temporal


class Base(DeclarativeBase):
    pass


class Region(Base):
    """A plain, unversioned table."""

    __tablename__ = "regions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Customer(Temporal, Base):
    __tablename__ = "customers"
    __temporal_ttl__ = timedelta(days=30)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(20), default="basic")
    email: Mapped[str | None] = mapped_column(String(100), unique=True)
    score: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(20), server_default="active")
    revision_note: Mapped[str] = mapped_column(String(20), default="created",
                                               onupdate="edited")
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"))

    region: Mapped[Region | None] = relationship()
    orders: Mapped[list[Order]] = relationship(
        primaryjoin="Customer.id == foreign(Order.customer_id)",
        back_populates="customer", cascade="all, delete-orphan", order_by="Order.id",
    )


class Order(Temporal, Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int]
    amount: Mapped[int]

    customer: Mapped[Customer] = relationship(
        primaryjoin="foreign(Order.customer_id) == Customer.id", back_populates="orders",
    )


class Line(Temporal, Base):
    """Composite entity key."""

    __tablename__ = "lines"

    order_no: Mapped[str] = mapped_column(String(20), primary_key=True)
    line_no: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    sku: Mapped[str] = mapped_column(String(20))
    qty: Mapped[int]
