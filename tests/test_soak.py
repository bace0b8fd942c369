"""A few seconds of concurrent writers, bulk statements, archival and exports on PostgreSQL.

``bench/soak.py`` runs the same mix for longer.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests import soak

pytestmark = pytest.mark.postgres


def test_a_concurrent_mix_leaves_history_exact(pg_engine: Engine) -> None:
    out = soak.run(pg_engine, seconds=4)
    assert out.counts["commits"] > 20 and out.counts["exports"] >= 2, out.counts
    assert soak.check(pg_engine, out) == []
