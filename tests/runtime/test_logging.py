"""A serving process's log output: JSON lines (or a console view), UTF-8, context merged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import Column, Integer, MetaData, String, Table

from runtime.db import Database
from runtime.logging import configure_logging
from runtime.rpcstatus import ErrorMapping


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.reset_defaults()  # configure_logging leaves a configured process alone
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_keep_chinese_context_and_tracebacks_without_locals() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = structlog.get_logger("node.test")
    structlog.contextvars.bind_contextvars(method="EnrolPerson", person_id=7)
    log.info("enrolled", name="张桂兰")
    log.debug("not shown")
    city_secret = b"do-not-log-me"  # a local variable a traceback must not carry
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", size=len(city_secret))
    logging.getLogger("grpc._server").warning("来自标准库 %s", "的记录")
    structlog.contextvars.clear_contextvars()

    text = out.getvalue()
    assert "张桂兰" in text and "\\u" not in text and "do-not-log-me" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in lines] == ["enrolled", "failed", "来自标准库 的记录"]
    first, failed, foreign = lines
    assert (first["level"], first["method"], first["person_id"]) == ("info", "EnrolPerson", 7)
    assert first["timestamp"].endswith("Z")
    assert failed["exception"][0]["exc_type"] == "RuntimeError"
    assert "locals" not in failed["exception"][0]["frames"][0]
    assert foreign["logger"] == "grpc._server" and foreign["level"] == "warning"


@pytest.mark.usefixtures("restore_logging")
def test_console_output_is_readable() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", out)
    structlog.get_logger().debug("serving", district="江宁区")
    assert "serving" in out.getvalue() and "district=江宁区" in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_an_ascii_stream_is_switched_to_utf8() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    configure_logging("info", "json", stream)
    structlog.get_logger().info("serving", district="江宁区")
    assert "江宁区" in raw.getvalue().decode("utf-8")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging("verbose", "json")
    with pytest.raises(ValueError, match="format"):
        configure_logging("info", "xml")


@pytest.mark.usefixtures("restore_logging")
def test_a_scrubbed_log_keeps_secrets_out_of_every_string_and_traceback() -> None:
    out = io.StringIO()
    assert configure_logging("info", "json", out, scrub=lambda s: s.replace("secret", "***"))
    log = structlog.get_logger("runtime.test")
    try:
        raise RuntimeError("a secret in the message")
    except RuntimeError:
        log.exception("failed", note="the secret", nested={"deep": ["secret"]})
    logging.getLogger("grpc._server").warning("a secret from %s", "grpc")
    text = out.getvalue()
    assert "secret" not in text and text.count("***") >= 4
    failed, foreign = (json.loads(line) for line in text.splitlines())
    assert failed["nested"] == {"deep": ["***"]}
    assert failed["exception"][0]["exc_value"] == "a *** in the message"
    assert foreign["event"] == "a *** from grpc"


@pytest.mark.usefixtures("restore_logging")
def test_a_configured_process_is_left_alone() -> None:
    first, second = io.StringIO(), io.StringIO()
    assert configure_logging("info", "json", first)
    assert not configure_logging("debug", "console", second)
    structlog.get_logger().debug("not shown")
    structlog.get_logger().info("shown once")
    assert '"event": "shown once"' in first.getvalue() and second.getvalue() == ""


PEOPLE = Table("people", MetaData(), Column("id", Integer, primary_key=True),
               Column("phone", String(11), unique=True), Column("age", Integer))


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_database_error_is_logged_without_the_values_it_quotes(
        empty_db_url: str, fmt: str) -> None:
    """PostgreSQL quotes a bad value ("invalid input syntax … \"李秀英…\"") and a
    duplicate key ("Key (phone)=(139…)") in its message; neither reaches the log of a
    call that failed on them, and the SQL and the traceback's frames still do."""
    out = io.StringIO()
    configure_logging("info", fmt, out)
    db = Database(empty_db_url, service="节点", write_lock=PEOPLE.select().limit(1))
    try:
        PEOPLE.metadata.create_all(db.writer)
        with db.write() as conn:
            conn.execute(PEOPLE.insert().values(id=1, phone="13900001111", age=60))
        errors = []
        for values in ({"id": 2, "phone": "13900001111", "age": 61},  # a duplicate phone
                       {"id": 3, "phone": "13800002222", "age": "李秀英 320115196306120243"}):
            try:
                with db.write() as conn:
                    conn.execute(PEOPLE.insert().values(**values))
            except Exception as e:
                errors.append(e)
        assert len(errors) == 2 if "postgres" in empty_db_url else len(errors) >= 1
        for error in errors:
            answer = ErrorMapping("node").answer(error)
            assert answer.reason == "INTERNAL" and answer.error_id
    finally:
        db.dispose()
    text = out.getvalue()
    for personal in ("13900001111", "13800002222", "李秀英", "320115196306120243"):
        assert personal not in text, (personal, text)
    assert "withheld" in text and "INSERT INTO people" in text
    assert "test_a_database_error_is_logged_without_the_values_it_quotes" in text  # frames


@pytest.mark.usefixtures("restore_logging")
def test_what_a_process_binds_is_on_every_line_its_own_and_the_libraries() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out, bind={"node_id": "320115", "district": "江宁区"})
    structlog.get_logger("node.test").info("claim", claim_id="c-1")
    structlog.get_logger("node.test").info("moved", district="鼓楼区")  # the line's own wins
    logging.getLogger("sqlalchemy.pool").warning("pool")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["node_id"], e["district"]) for e in lines] == [
        ("claim", "320115", "江宁区"), ("moved", "320115", "鼓楼区"), ("pool", "320115", "江宁区")]
