from pathlib import Path

import pytest

from routesh.db.dsn import parse_dsn, redact
from routesh.errors import UsageError


def test_paths_and_sqlite_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_dsn("a.db").location == str(tmp_path / "a.db")
    assert parse_dsn("sqlite:///rel/a.db").location == str(tmp_path / "rel" / "a.db")
    assert parse_dsn("sqlite:////abs/a.db").location == "/abs/a.db"
    assert parse_dsn("sqlite:///my%20file.db").location == str(tmp_path / "my file.db")
    assert parse_dsn("~/x.db").location == str(Path.home() / "x.db")
    assert {parse_dsn(d).dialect for d in ("a.db", "sqlite:///a.db")} == {"sqlite"}


def test_postgres_forms(monkeypatch):
    for dsn in ("postgresql://u@h/db", "postgres://h/db", "host=h dbname=db", "dbname=x"):
        target = parse_dsn(dsn)
        assert (target.dialect, target.location) == ("postgres", dsn)
    monkeypatch.setenv("PGDATABASE", "shop")
    assert parse_dsn("").dialect == "postgres"


@pytest.mark.parametrize("dsn", ["mysql://h/db", "sqlite://host/a.db", "sqlite:///"])
def test_rejected(dsn):
    with pytest.raises(UsageError):
        parse_dsn(dsn)


def test_redact_hides_passwords():
    assert redact("postgresql://bob:s3cret@db.example:5433/shop?sslmode=require") == \
        "postgresql://bob@db.example:5433/shop?sslmode=require"
    assert "s3cret" not in redact("postgresql://h/db?password=s3cret&x=1")
    assert "s3cret" not in redact("host=h password=s3cret dbname=x")
    assert "s3cret" not in redact("host=h password='s3 cret' dbname=x".replace("s3 cret", "s3cret"))
