"""Outside clients read every format exactly: pyarrow, pandas, polars, DuckDB (and Spark).

One export per format of the table with every portable type and hostile
values (tests/test_encoding.py), read with each client as the README says,
compared value by value with the database: each value a client returns is
turned back into canonical text, which is exact (``-0.0`` is not ``0.0``,
NaN is not NULL, ``""`` is not NULL). Where a client cannot tell two values
apart, the README says so and the test pins exactly that loss.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from temporal import export
from tests.test_encoding import Every, database_texts, fill, portable_rows, schema_of

pytestmark = pytest.mark.filterwarnings("ignore:Dialect sqlite")
TABLE = "every"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The table exported in every format (SQLite: the files are byte-identical to
    PostgreSQL's, tests/test_encoding.py shows), with the database's canonical texts."""
    root = tmp_path_factory.mktemp("readers")
    engine: Engine = create_engine(f"sqlite:///{root}/db.sqlite")
    at = fill(engine, Every, portable_rows())
    for fmt in ("csv", "jsonl", "parquet"):
        export(engine, root / fmt, as_of=at, tables=[TABLE], format=fmt, rows_per_file=5)
    names, types = schema_of(root / "csv", TABLE)
    expected = database_texts(engine, Every, names, types)
    engine.dispose()
    yield {"root": root, "names": names, "types": types, "expected": expected}


def texts(columns: dict[str, list[Any]], data: dict[str, Any]) -> list[list[str | None]]:
    """Values a client returned, column by column, as canonical texts (rows)."""
    from temporal.encoding import encoder

    out = []
    for name, column in zip(data["names"], data["types"], strict=True):
        encode = encoder(column)
        values = [_plain(v, column.encoding) for v in columns[name]]
        if column.encoding == "decimal":  # an equal Decimal may carry another exponent
            scale = decimal.Decimal(1).scaleb(-(column.scale or 0))
            values = [v.quantize(scale) if isinstance(v, decimal.Decimal) else v for v in values]
        out.append([encode(v) for v in values])
    return [list(row) for row in zip(*out, strict=True)]


def _plain(value: Any, encoding: str) -> Any:
    """A client's scalar as the Python value the database driver gives."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (bytes, str)):
        value = value.item()  # numpy scalars
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, float) and math.isnan(value) and encoding != "float":
        return None
    if encoding == "date" and isinstance(value, dt.datetime):  # a reader's guess
        return value.date()
    if encoding == "uuid" and not isinstance(value, str):
        return str(value)
    if encoding == "timestamp_utc" and isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def parts(data: dict[str, Any], fmt: str) -> list[Path]:
    return sorted((data["root"] / fmt / TABLE).glob(f"part-*.{fmt}"))


def by_column(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


# -- Parquet: typed, every client -----------------------------------------------------------


def test_pyarrow_reads_parquet_and_a_glob_over_the_folder(exported: dict[str, Any]) -> None:
    import pyarrow.dataset as ds

    table = ds.dataset(exported["root"] / "parquet" / TABLE, format="parquet").to_table()
    assert texts(table.to_pydict(), exported) == exported["expected"]
    assert str(table.schema.field("amount").type) == "decimal128(38, 10)"
    assert table.schema.field("seen").metadata[b"temporal.sql_type"] == b"DATETIME"


def test_pandas_reads_parquet(exported: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.concat([pd.read_parquet(p, dtype_backend="pyarrow")
                       for p in parts(exported, "parquet")], ignore_index=True)
    assert texts({c: frame[c].tolist() for c in frame.columns}, exported) == \
        exported["expected"]


def test_polars_reads_parquet(exported: dict[str, Any]) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.read_parquet(exported["root"] / "parquet" / TABLE / "*.parquet")
    assert texts(frame.to_dict(as_series=False), exported) == exported["expected"]


def test_duckdb_reads_parquet(exported: dict[str, Any]) -> None:
    duckdb = pytest.importorskip("duckdb")
    glob = exported["root"] / "parquet" / TABLE / "*.parquet"
    result = duckdb.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY id")
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]
    assert texts(by_column(rows), exported) == exported["expected"]


# -- CSV: canonical text, strings first ------------------------------------------------------


def test_pyarrow_reads_csv_exactly(exported: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = exported["names"]
    tables = [pacsv.read_csv(
        p, parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
            quoted_strings_can_be_null=False)) for p in parts(exported, "csv")]
    table = pa.concat_tables(tables)
    assert [[v for v in row.values()] for row in table.to_pylist()] == exported["expected"]


def test_polars_and_duckdb_read_csv_exactly(exported: dict[str, Any]) -> None:
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    glob = exported["root"] / "csv" / TABLE / "*.csv"
    frame = pl.read_csv(glob, infer_schema=False)
    assert [list(r) for r in frame.rows()] == exported["expected"]
    result = duckdb.sql(f"SELECT * FROM read_csv('{glob}', all_varchar = true, "
                        "allow_quoted_nulls = false) "
                        "ORDER BY id::BIGINT")
    assert [list(r) for r in result.fetchall()] == exported["expected"]


def test_pandas_reads_csv_but_cannot_tell_empty_text_from_null(
        exported: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
                       for p in parts(exported, "csv")], ignore_index=True)
    got = [[None if isinstance(v, float) else v for v in row]
           for row in frame.itertuples(index=False)]
    # The documented loss: read_csv turns "" into NaN like NULL ("NA", "null" stay text).
    assert got == [["" if False else (None if v == "" else v) for v in row]
                   for row in exported["expected"]]
    assert "NA" in frame["label"].tolist() and "null" in frame["label"].tolist()


# -- JSON lines -------------------------------------------------------------------------


def test_pyarrow_and_pandas_read_json_lines(exported: dict[str, Any]) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pajson

    table = pa.concat_tables([pajson.read_json(p) for p in parts(exported, "jsonl")])
    assert texts(table.to_pydict(), exported) == exported["expected"]
    # (pandas' default ujson engine rounds floats and refuses 5e-324: use pyarrow's)
    frame = pd.concat([pd.read_json(p, lines=True, engine="pyarrow", dtype_backend="pyarrow")
                       for p in parts(exported, "jsonl")], ignore_index=True)
    assert texts({c: frame[c].tolist() for c in frame.columns}, exported) == \
        exported["expected"]


def test_polars_and_duckdb_read_json_lines(exported: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.json as pajson

    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    # polars' own reader refuses the bare NaN/Infinity of float columns: through Arrow.
    frame = pl.from_arrow(pa.concat_tables([pajson.read_json(p)
                                            for p in parts(exported, "jsonl")]))
    assert texts(frame.to_dict(as_series=False), exported) == exported["expected"]
    glob = exported["root"] / "jsonl" / TABLE / "*.jsonl"
    result = duckdb.sql(f"SELECT * FROM read_json('{glob}', format = 'newline_delimited') "
                        "ORDER BY id")
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]
    assert texts(by_column(rows), exported) == exported["expected"]


# -- Spark ------------------------------------------------------------------------------


@pytest.mark.spark
def test_spark_reads_parquet(exported: dict[str, Any]) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("PySpark needs a Java runtime")
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import date_format

    spark = (SparkSession.builder.master("local[1]").appName("temporal-readers")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.timeType.enabled", "true")
             # dates before 1582 as written (proleptic Gregorian), not rebased to Julian
             .config("spark.sql.parquet.datetimeRebaseModeInRead", "CORRECTED")
             .getOrCreate())
    try:
        frame = spark.read.parquet(str(exported["root"] / "parquet" / TABLE)).orderBy("id")
        assert dict(frame.dtypes)["amount"] == "decimal(38,10)"
        # PySpark's own datetime conversion fails for year 1 in Python: the instant as
        # Spark prints it in UTC instead.
        frame = frame.withColumn("seen", date_format("seen", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"))
        rows = [r.asDict() for r in frame.collect()]
    finally:
        spark.stop()
    assert texts(by_column(rows), exported) == exported["expected"]
