"""The application's model after adopting temporal: one mixin added, nothing else."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from temporal import Temporal


class Base(DeclarativeBase):
    pass


class Product(Temporal, Base):  # was: class Product(Base)
    __tablename__ = "products"
    __temporal_ttl__ = timedelta(days=365)  # history older than a year goes to the archive

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[float] = mapped_column(Numeric(10, 2, asdecimal=False))
    currency: Mapped[str] = mapped_column(String(3))  # added with the adoption
