"""``timebank node report`` and ``timebank clearinghouse report``: gather a period's data
from the service's own database (read-only, never through a running server, so a report
can be made from a backup too), write every format into ``--out`` and list the files.

They live in the city tools, not in the services, because the services never import the
city tools and the renderers are the city's (city/cli.py adds them to each group).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from city.audit.readonly import readonly_engine
from city.audit.report import AuditError
from runtime.console import CliError, echo, guarded
from timebank.settlement import Period, SettlementError

from .tables import ReportData

PeriodOption = Annotated[str, typer.Option(
    "--period", metavar="PERIOD",
    help="The period: a month YYYY-MM (2026-11) or the label a statement closed at a log "
         "size carries.")]
OutDir = Annotated[Path, typer.Option(
    "--out", metavar="DIR", help="Write the report here (made if missing; files of the same "
                                 "names are replaced).")]


def check_period(label: str) -> str:
    try:
        Period(label)
    except SettlementError:
        raise CliError(f"期间写作 年-月（如 2026-11）或结算单的期间名 / a period is a month "
                       f"YYYY-MM such as 2026-11, or a statement's period label, not "
                       f"{label[:40]!r}") from None
    return label


def _write(out: Path, data: ReportData) -> None:
    """Render and list the files. The renderers (matplotlib, fpdf2, openpyxl) load here,
    not when ``timebank`` starts: every other command would pay for them."""
    from .write import write_report

    paths = write_report(out, data)
    echo(f"已写出 {len(paths)} 个文件到 {escape(str(out))} / wrote {len(paths)} files to "
         f"{escape(str(out))}")
    for p in paths:
        echo(f"  {escape(p.name)}")
    if data.statement is None:
        echo("（本期间尚无结算单，报告只含明细 / no statement for this period yet: counts only）")


@guarded
def node_report_command(
    config_file: Annotated[Path, typer.Option(
        "--config", "-c", metavar="FILE", help="The node's configuration (node.toml).")],
    period: PeriodOption,
    out: OutDir,
) -> None:
    """Write the district's report for a period: its orders by category, street and
    month, and the settlement statement as this node received and answered it (CSV,
    Excel, PDF, charts)."""
    from node.bootstrap import read_policy
    from node.config import load_config

    from .gather.node import node_report

    label = check_period(period)
    config = load_config(config_file)
    categories = {c.code: c.name for c in read_policy(config.policy_file).categories}
    try:
        engine = readonly_engine(config.effective_database_url)
    except AuditError as e:
        raise CliError(f"无法打开节点数据库 / cannot open the node's database: {e}") from None
    try:
        with engine.connect() as conn:
            data = node_report(conn, config.node_id, config.district, label, categories,
                               datetime.now(UTC))
    finally:
        engine.dispose()
    _write(out, data)


@guarded
def clearinghouse_report_command(
    config_file: Annotated[Path, typer.Option(
        "--config", "-c", metavar="FILE", help="The clearinghouse's configuration "
        "(clearinghouse.toml).")],
    period: PeriodOption,
    out: OutDir,
) -> None:
    """Write the bureau's report for a period: the settlement statement as a PDF for the
    finance office, the matrix, positions, netting and money as CSV and Excel, claim
    counts by district, kind and month, and charts of the flows and positions."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.config import load_config

    from .gather.clearinghouse import clearinghouse_report

    label = check_period(period)
    app = open_app(load_config(config_file))
    try:
        data = clearinghouse_report(app, label, datetime.now(UTC))
    finally:
        app.db.dispose()
    _write(out, data)
