"""Where exports land: --force replaces only a previous export, never a database or other files;
a finished export appears at once, an interrupted one is recognisable and replaced by a re-run;
an OS error on output is one line and leaves nothing behind."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, create_engine, insert
from sqlalchemy.orm import Session

from temporal import ExportError, export, transaction_time
from temporal.outdir import MARKER
from tests.models import Base, Customer


def populate(engine: Engine) -> datetime:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.execute(insert(Customer), [{"id": i, "name": f"customer {i}" * 5}
                                     for i in range(1, 301)])
        moment = transaction_time(s)
    return moment


@pytest.fixture
def folder_db(tmp_path: Path) -> tuple[Path, str, datetime]:
    """A SQLite database file inside the folder a careless user exports into."""
    work = tmp_path / "work"
    work.mkdir()
    url = f"sqlite:///{work}/w.db"
    engine = create_engine(url)
    moment = populate(engine)
    engine.dispose()
    return work, url, moment


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_force_never_replaces_the_database(folder_db: tuple[Path, str, datetime]) -> None:
    work, url, moment = folder_db
    before = snapshot(work)
    with pytest.raises(ExportError, match="holds the database being exported"):
        export(url, work, as_of=moment, tables=["customers"], force=True)
    # Even a forged manifest that lists the database does not make it replaceable.
    (work / "manifest.json").write_text(json.dumps({"files": [{"path": "w.db"}]}))
    with pytest.raises(ExportError, match="holds the database"):
        export(url, work, as_of=moment, tables=["customers"], force=True)
    (work / "manifest.json").unlink()
    assert snapshot(work) == before


def test_out_dot_in_the_database_folder_is_refused(folder_db: tuple[Path, str, datetime]
                                                   ) -> None:
    work, _, moment = folder_db
    before = snapshot(work)
    done = subprocess.run([sys.executable, "-m", "temporal", "export", "--as-of",
                           moment.isoformat(), "--table", "customers", "--out", ".", "--force",
                           "--url", "sqlite:///w.db"], cwd=work, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1 and "holds the database being exported" in done.stderr
    assert snapshot(work) == before


def test_force_never_deletes_unrelated_files(folder_db: tuple[Path, str, datetime],
                                             tmp_path: Path) -> None:
    _, url, moment = folder_db
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "src").mkdir()
    (project / "src" / "app.py").write_text("print('hi')\n")
    (project / "notes.txt").write_text("mine\n")
    before = snapshot(project)
    with pytest.raises(ExportError, match="not a temporal export"):
        export(url, project, as_of=moment, tables=["customers"], force=True)
    assert snapshot(project) == before
    # A previous export with one extra file is not a previous export any more.
    export(url, tmp_path / "e", as_of=moment, tables=["customers"])
    (tmp_path / "e" / "customers" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a temporal export"):
        export(url, tmp_path / "e", as_of=moment, tables=["customers"], force=True)
    assert (tmp_path / "e" / "customers" / "mine.txt").read_text() == "keep me"


def test_a_marker_file_does_not_make_a_folder_replaceable(folder_db: tuple[Path, str, datetime],
                                                         tmp_path: Path) -> None:
    """Only ``<out>.partial`` is ever interrupted: a marker inside ``out`` (or in the folder
    an export moves the one it replaces to) is a file like any other."""
    _, url, moment = folder_db
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("print('hi')\n")
    (project / MARKER).write_text("not mine\n")
    before = snapshot(project)
    for force in (False, True):
        with pytest.raises(ExportError, match="not a temporal export"):
            export(url, project, as_of=moment, tables=["customers"], force=force)
        assert snapshot(project) == before
    export(url, tmp_path / "e", as_of=moment, tables=["customers"])
    aside = tmp_path / ".e.replaced"
    (aside / "src").mkdir(parents=True)
    (aside / "src" / "app.py").write_text("keep me")
    (aside / MARKER).write_text("")
    with pytest.raises(ExportError, match="in the way"):
        export(url, tmp_path / "e", as_of=moment, tables=["customers"], force=True)
    assert (aside / "src" / "app.py").read_text() == "keep me"


def test_force_replaces_a_previous_export_and_an_empty_folder_needs_nothing(
    folder_db: tuple[Path, str, datetime], tmp_path: Path
) -> None:
    _, url, moment = folder_db
    out = tmp_path / "out"
    out.mkdir()
    export(url, out, as_of=moment, tables=["customers"], format="jsonl")
    with pytest.raises(ExportError, match="holds a previous export; pass --force"):
        export(url, out, as_of=moment, tables=["customers"])
    manifest = export(url, out, as_of=moment, tables=["customers"], force=True)
    assert manifest.format == "csv" and manifest.path == out / "manifest.json"
    assert sorted(p.name for p in out.iterdir()) == ["customers", "manifest.json"]
    assert [p.name for p in (out / "customers").iterdir()] == ["part-00000.csv"]
    assert not (tmp_path / "out.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]


_KILLED = """
import os, signal, sys
from temporal import export
from temporal.clock import parse_time

def die(progress):
    os.kill(os.getpid(), signal.SIGKILL)  # mid-export, after the first batch

export(sys.argv[1], sys.argv[2], as_of=parse_time(sys.argv[3]), tables=["customers"],
       on_progress=die)
"""


def test_an_interrupted_export_is_recognisable_and_a_rerun_replaces_it(
    folder_db: tuple[Path, str, datetime], tmp_path: Path
) -> None:
    _, url, moment = folder_db
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _KILLED, url, str(out), moment.isoformat()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL
    partial = tmp_path / "out.partial"
    assert not out.exists()  # never a half export under the real name
    assert "did not finish" in (partial / MARKER).read_text()
    assert not (partial / "manifest.json").exists()
    manifest = export(url, out, as_of=moment, tables=["customers"])  # no --force needed
    assert manifest.rows == 300 and not partial.exists()


def test_output_errors_are_one_line_and_leave_nothing(
    folder_db: tuple[Path, str, datetime], tmp_path: Path
) -> None:
    _, url, moment = folder_db
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, reason in [(blocker / "out", "file is not a directory"),
                        (Path("/proc/temporal-export"), "cannot write the export"),
                        (blocker, "exists and is not a directory")]:
        done = subprocess.run([sys.executable, "-m", "temporal", "export", "--as-of",
                               moment.isoformat(), "--table", "customers", "--out", str(out),
                               "--url", url], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 1 and reason in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert blocker.read_text() == "x"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


@pytest.mark.postgres
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(pg_url: URL, tmp_path: Path) -> None:
    engine = create_engine(pg_url)
    moment = populate(engine)
    engine.dispose()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "temporal", "export", "--as-of",
                           moment.isoformat(), "--table", "customers", "--out", str(out),
                           "--url", pg_url.render_as_string(hide_password=False)],
                          capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=_limit_file_size, env={**os.environ, "PYTHONWARNINGS": ""})
    assert done.returncode == 1, done.stderr
    assert "File too large" in done.stderr and "nothing was left behind" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tiny tmpfs (as root, where the machine allows it) with the given options."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("options, reason", [("size=64k", "No space left on device"),
                                             ("ro,size=64k", "Read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(
    tmp_path: Path, small_disk: Callable[[str], Path], options: str, reason: str
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/big.db")
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.execute(insert(Customer), [{"id": i, "name": "x" * 100} for i in range(1, 3001)])
        moment = transaction_time(s)
    engine.dispose()
    disk = small_disk(options)
    done = subprocess.run([sys.executable, "-m", "temporal", "export", "--as-of",
                           moment.isoformat(), "--table", "customers", "--out",
                           str(disk / "out"), "--url", f"sqlite:///{tmp_path}/big.db"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and reason in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert list(disk.iterdir()) == []  # no partial file, no partial folder
