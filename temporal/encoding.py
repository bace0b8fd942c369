"""Canonical values: one mapping from a column's SQL type to its text, JSON and Arrow forms.

Every exported value is first turned into its **canonical text**, chosen by the
column's SQL type (never by the value in hand), and everything else follows
from that text: the content digest hashes it (each row as one fully quoted CSV
line, NULL an empty field), CSV writes it, JSON lines embed it, and Parquet
parses it into the column's Arrow type. So the same data gives the same digest
in every format, on every path (PostgreSQL's COPY renders the same text in
SQL, see :mod:`temporal.pgcopy`) and on both backends for portable types.

A column's type is an :class:`ColumnType`: the SQL type as the database spells
it and an *encoding* (``integer``, ``float``, ``decimal``, ``timestamp_utc``,
``json``...). The manifest records both, plus the Arrow type, for every
column, so any reader can restore exact types. The encodings:

=============== ================================== ============ =========================
encoding        canonical text                     JSON lines   Arrow / Parquet
=============== ================================== ============ =========================
integer         ``-12``                            number       int64 (nullable)
boolean         ``true`` / ``false``               true/false   bool
float           ``repr``: ``0.1``, ``1e+23``,      number;      float64
                ``-0.0``, ``NaN``, ``Infinity``    ``NaN``,
                                                   ``Infinity``
decimal         plain digits, the column's scale   string       decimal128(p, s)
                (``1.5000``); ``NaN``                           (string if unbounded)
text            the string                         string       string
timestamp_utc   ``2026-01-02T03:04:05.000006Z``    string       timestamp[us, tz=UTC]
timestamp       ``2026-01-02T03:04:05.000006``     string       timestamp[us]
date            ``2026-01-02``                     string       date32
time            ``03:04:05.000006``                string       time64[us]
interval        ISO 8601 as PostgreSQL spells it   string       string
                (``P1M2DT3H4.5S``)
bytes           lowercase hex                      string       binary
uuid            ``0f1e...-...`` (lowercase)        string       string
json            the document re-serialized: keys   string       string
                sorted, no spaces; JSON ``null`` is
                ``null``, SQL NULL stays NULL
array           a JSON array of the items'         array        list<item type>
                canonical texts (``["1",null]``)
other           ``str(value)``                     string       string
=============== ================================== ============ =========================

JSON documents are carried as their canonical text (a JSON string in JSON
lines), so SQL NULL, JSON ``null``, the number ``1``, the string ``"1"`` and
an object each keep their identity, and a column never mixes value types.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.engine import Dialect

from temporal._compat import is_binary_type, is_interval_type

UTC = dt.timezone.utc

INTEGER = "integer"
BOOLEAN = "boolean"
FLOAT = "float"
DECIMAL = "decimal"
TEXT = "text"
TIMESTAMP_UTC = "timestamp_utc"
TIMESTAMP = "timestamp"
DATE = "date"
TIME = "time"
INTERVAL = "interval"
BYTES = "bytes"
UUID = "uuid"
JSON = "json"
ARRAY = "array"
OTHER = "other"

#: Encodings whose canonical text is itself a JSON value (a JSON lines value as is).
JSON_RAW = frozenset({INTEGER, BOOLEAN, FLOAT, ARRAY})


@dataclass(frozen=True)
class ColumnType:
    """What decides a column's canonical encoding: its SQL type."""

    sql: str
    encoding: str
    precision: int | None = None
    scale: int | None = None
    item: ColumnType | None = None  # arrays

    @property
    def arrow(self) -> str:
        """The Arrow type, spelled as pyarrow prints it."""
        kind = self.encoding
        if kind == DECIMAL:
            if self.precision is None or self.scale is None or self.precision > 76:
                return "string"
            width = 128 if self.precision <= 38 else 256
            return f"decimal{width}({self.precision}, {self.scale})"
        if kind == ARRAY:
            assert self.item is not None
            return f"list<element: {self.item.arrow}>"  # Parquet's name for items
        return _ARROW[kind]

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the type (beside the column's name)."""
        out: dict[str, Any] = {"type": self.sql, "encoding": self.encoding, "arrow": self.arrow}
        if self.precision is not None:
            out["precision"] = self.precision
        if self.scale is not None:
            out["scale"] = self.scale
        if self.item is not None:
            out["item"] = self.item.describe()
        return out

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> ColumnType:
        """Back from :meth:`describe` (manifests before encodings: canonical by value)."""
        item = entry.get("item")
        return cls(sql=entry.get("type", ""), encoding=entry.get("encoding", OTHER),
                   precision=entry.get("precision"), scale=entry.get("scale"),
                   item=None if item is None else cls.from_manifest(item))


_ARROW = {
    INTEGER: "int64", BOOLEAN: "bool", FLOAT: "double", TEXT: "string",
    TIMESTAMP_UTC: "timestamp[us, tz=UTC]", TIMESTAMP: "timestamp[us]", DATE: "date32[day]",
    TIME: "time64[us]", INTERVAL: "string", BYTES: "binary", UUID: "string", JSON: "string",
    OTHER: "string",
}


def column_type(kind: sqltypes.TypeEngine[Any], dialect: Dialect) -> ColumnType:
    """The canonical encoding of a column declared as ``kind`` (model or reflection)."""
    try:
        sql = kind.compile(dialect=dialect)
    except Exception:  # a type without DDL on this dialect: its Python spelling
        sql = str(kind.__class__.__name__)
    base = kind
    while isinstance(base, sqltypes.TypeDecorator):
        base = base.impl_instance
    if isinstance(base, sqltypes.ARRAY):
        return ColumnType(sql, ARRAY, item=column_type(base.item_type, dialect))
    return ColumnType(sql, *_encoding_of(base))


def _encoding_of(kind: sqltypes.TypeEngine[Any]) -> tuple[str, int | None, int | None]:
    if isinstance(kind, sqltypes.Boolean):
        return BOOLEAN, None, None
    if isinstance(kind, sqltypes.Integer):
        return INTEGER, None, None
    if isinstance(kind, sqltypes.Float):  # before Numeric, its base class
        return FLOAT, None, None
    if isinstance(kind, sqltypes.Numeric):
        return DECIMAL, kind.precision, kind.scale
    if isinstance(kind, sqltypes.DateTime):
        return (TIMESTAMP_UTC if kind.timezone else TIMESTAMP), None, None
    if isinstance(kind, sqltypes.Date):
        return DATE, None, None
    if isinstance(kind, sqltypes.Time):
        return (OTHER if kind.timezone else TIME), None, None
    if is_interval_type(kind):
        return INTERVAL, None, None
    if isinstance(kind, sqltypes.JSON):
        return JSON, None, None
    if isinstance(kind, sqltypes.Uuid):
        return UUID, None, None
    if is_binary_type(kind):
        return BYTES, None, None
    if isinstance(kind, sqltypes.String):
        return TEXT, None, None
    return OTHER, None, None


#: PostgreSQL's type names (``pg_type.typname``) for columns of a query's result.
_PG_NAMES = {
    "int2": INTEGER, "int4": INTEGER, "int8": INTEGER, "oid": INTEGER, "bool": BOOLEAN,
    "float4": FLOAT, "float8": FLOAT, "numeric": DECIMAL, "text": TEXT, "varchar": TEXT,
    "bpchar": TEXT, "name": TEXT, "char": TEXT, "timestamptz": TIMESTAMP_UTC,
    "timestamp": TIMESTAMP, "date": DATE, "time": TIME, "interval": INTERVAL, "bytea": BYTES,
    "uuid": UUID, "json": JSON, "jsonb": JSON,
}


def pg_column_type(typname: str, sql: str, precision: int | None = None,
                   scale: int | None = None, item: tuple[str, str] | None = None) -> ColumnType:
    """The encoding of a PostgreSQL result column by its type name (``--query`` exports)."""
    if item is not None:
        return ColumnType(sql, ARRAY, item=pg_column_type(*item))
    encoding = _PG_NAMES.get(typname, OTHER)
    if encoding != DECIMAL:
        precision = scale = None
    return ColumnType(sql, encoding, precision, scale)


# -- canonical text --------------------------------------------------------------------


def canonical(value: Any) -> str | None:
    """The canonical text of a value of no declared type (by its Python type); None: NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, decimal.Decimal):
        return _decimal(value)
    if isinstance(value, dt.datetime):
        return _timestamp_utc(value) if value.tzinfo is not None else _timestamp(value)
    if isinstance(value, dt.time) and value.tzinfo is None:
        return _time(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _interval(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return str(value)


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _decimal(value: decimal.Decimal) -> str:
    # Plain digits, as PostgreSQL prints numeric (str() would say 1E-7).
    return format(value, "f")


def _timestamp_utc(value: dt.datetime) -> str:
    # A naive value in an instant column is UTC: how SQLite stores instants.
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _timestamp(value: dt.datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _time(value: dt.time) -> str:
    return value.isoformat(timespec="microseconds")


def _interval(value: dt.timedelta) -> str:
    """ISO 8601 as PostgreSQL writes an interval (``IntervalStyle = iso_8601``)."""
    days, seconds, micro = value.days, value.seconds, value.microseconds
    if not (days or seconds or micro):
        return "PT0S"
    text = "P" + (f"{days}D" if days else "")
    if seconds or micro:
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        text += "T" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
        if secs or micro:
            text += (f"{secs}.{micro:06d}".rstrip("0") if micro else str(secs)) + "S"
    return text


def _json_text(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True)


def _json(value: Any) -> str:
    """A JSON column's value: its text as stored (read as text, so ``null`` is kept)."""
    return _json_text(json.loads(value) if isinstance(value, (str, bytes)) else value)


Encoder = Callable[[Any], "str | None"]


def read_as_text(dialect: str) -> frozenset[str]:
    """The encodings read from ``dialect`` as their text rather than through the driver:
    JSON documents (a driver turns JSON null into NULL) and PostgreSQL intervals (a
    driver turns a month into 30 days)."""
    return frozenset((JSON, INTERVAL)) if dialect == "postgresql" else frozenset((JSON,))


def encoder(column: ColumnType) -> Encoder:
    """The function from a value read for ``column`` to its canonical text."""
    kind = column.encoding
    if kind == ARRAY:
        assert column.item is not None
        item = encoder(column.item)

        def items(value: Any) -> Any:
            return [items(v) if isinstance(v, list) else item(v) for v in value]

        def array(value: Any) -> str | None:
            if value is None:
                return None
            if isinstance(value, str):  # already canonical (read back from a file)
                return value
            return json.dumps(items(value), ensure_ascii=False, separators=(",", ":"))

        return array
    fast, kinds = _ENCODERS.get(kind, (canonical, ()))
    if not kinds:
        return canonical

    def encode(value: Any) -> str | None:
        if value is None:
            return None
        if type(value) in kinds:
            return fast(value)  # type: ignore[no-any-return]
        return _fallback(kind, value)

    return encode


def _fallback(kind: str, value: Any) -> str | None:
    """A value whose Python type is not the column's usual one (SQLite mixes them)."""
    if kind == FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return _float(float(value))
    if kind == TIMESTAMP_UTC and isinstance(value, dt.datetime):
        return _timestamp_utc(value)
    if kind == JSON:
        return _json(value)
    return canonical(value)


def _text_or(fast: Callable[[Any], str]) -> Callable[[Any], str]:
    """For columns that some paths read as text that is already canonical."""
    return lambda value: value if isinstance(value, str) else fast(value)


_ENCODERS: dict[str, tuple[Callable[[Any], Any], tuple[type, ...]]] = {
    INTEGER: (int.__repr__, (int,)),
    BOOLEAN: (lambda v: "true" if v else "false", (bool,)),
    FLOAT: (_float, (float,)),
    DECIMAL: (_decimal, (decimal.Decimal,)),
    TEXT: (str.__str__, (str,)),
    TIMESTAMP_UTC: (_timestamp_utc, (dt.datetime,)),
    TIMESTAMP: (_timestamp, (dt.datetime,)),
    DATE: (dt.date.isoformat, (dt.date,)),
    TIME: (_time, (dt.time,)),
    # PostgreSQL intervals are read as their ISO text; SQLite hands back timedeltas.
    INTERVAL: (_text_or(_interval), (dt.timedelta, str)),
    BYTES: (bytes.hex, (bytes,)),
    UUID: (_text_or(uuid.UUID.__str__), (uuid.UUID, str)),
    JSON: (_json, (str,)),
    OTHER: (canonical, ()),
}


# -- rows --------------------------------------------------------------------------------

#: The content digest's algorithm, named with the version of the canonical text it
#: hashes: a change to any canonical text gets a new version here, so that an export
#: of an older version is never compared with a re-export as if history had changed.
#: Each table's digest hashes its rows; ``all``, for more than one table, hashes the
#: tables' digests (see :func:`all_digest`), so that tables can be written in parallel.
CSV_ROWS = "sha256 over canonical CSV rows, encoding 2, all over table digests"
#: The same rows and table digests, with ``all`` one sha256 over every table's rows in
#: turn (exports of the previous version: verified and re-exported as they were made).
CSV_ROWS_2 = "sha256 over canonical CSV rows, encoding 2"
#: Earlier names: the same rows (CSV lines; compact JSON arrays before that) of
#: canonical text chosen by each value's Python type rather than the column's type.
CSV_ROWS_1 = "sha256 over canonical CSV rows"
JSON_ROWS = "sha256 over canonical JSON rows"
OLDER_ENCODINGS = frozenset({CSV_ROWS_1, JSON_ROWS})
#: The algorithms that hash this version's canonical text.
THIS_ENCODING = frozenset({CSV_ROWS, CSV_ROWS_2})
#: The algorithms whose ``all`` hashes the rows of every table in turn.
ALL_OVER_ROWS = frozenset({CSV_ROWS_2, CSV_ROWS_1, JSON_ROWS})


def all_digest(tables: dict[str, str]) -> str:
    """``all`` of the table digests ``tables`` (name -> hex): one table's own digest;
    for more, sha256 over the JSON list of ``[name, digest]`` pairs in name order."""
    if len(tables) == 1:
        return next(iter(tables.values()))
    pairs = [[name, tables[name]] for name in sorted(tables)]
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
                          .encode()).hexdigest()


def csv_row(canon: Sequence[str | None]) -> bytes:
    """From canonical values, one CSV line: NULL is an empty field; every other value
    is quoted (so ``""`` is the empty string). This is the content digest's row."""
    return (",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in canon)
            + "\n").encode()


def json_row(values: Sequence[str | None]) -> bytes:
    """A compact JSON array of canonical values (content digests of format 1 exports)."""
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


DIGEST_ROWS = {CSV_ROWS: csv_row, CSV_ROWS_2: csv_row, CSV_ROWS_1: csv_row,
               JSON_ROWS: json_row}
