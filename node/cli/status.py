"""`timebank node status --config F [--json]`: the node's link to the city at a glance.

What waits in the outbox and for how long, the last delivery applied, the newest tree
head this node verified (witnessed) and its age, how long it has waited for a quorum
(the finality lag), and the claims by state come from the node's database
(``node.usecases.status``: the same reads its metrics make), so the command works with
the node running or stopped. Whether the link is up is the running process's state: it
is read from the node's metrics endpoint (``[server] metrics_listen``), and is
"unknown" when that does not answer.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from node.cli.common import AsJson, ConfigFile, echo, guarded, print_json
from node.config import NodeConfig, load_config
from runtime.console import label_grid
from runtime.metrics import parse_listen
from timebank.citytime import CITY_TZ

if TYPE_CHECKING:
    from node.usecases.status import HeadFact, NodeStatus

#: How long the command waits for the node's metrics endpoint.
METRICS_TIMEOUT_SECONDS = 3.0
_LINK_UP = re.compile(r"^timebank_node_link_up (\S+)$", re.MULTILINE)


def metrics_url(listen: str) -> str | None:
    """Where to read a node's metrics from this machine (None: off, or on port 0)."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    if port == 0:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"


def link_state(url: str | None) -> bool | None:
    """Whether the running node's link is up, from its metrics (None: cannot tell)."""
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_SECONDS) as answer:
            text = answer.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    found = _LINK_UP.search(text)
    return None if found is None else float(found.group(1)) >= 1


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} 秒 / {whole}s"
    if whole < 3600:
        return f"{whole // 60} 分 {whole % 60} 秒 / {whole // 60}m{whole % 60}s"
    return f"{whole // 3600} 小时 {whole % 3600 // 60} 分 / {whole // 3600}h{whole % 3600 // 60}m"


def _head_text(status: NodeStatus, head: HeadFact | None) -> str:
    if head is None:
        return "无 / none yet"
    if head.at is None:
        return f"{head.size} 条 / entries"
    signed = datetime.fromtimestamp(head.at, UTC).astimezone(CITY_TZ)
    return (f"{head.size} 条 / entries, 签于 / signed {signed:%Y-%m-%d %H:%M:%S} "
            f"({_age(status.age_seconds(head))} 前 / ago)")


_LINK_TEXT = {True: "[green]已连接 / up[/]", False: "[red]已断开 / down[/]",
              None: "未知 / unknown (节点未运行或指标端口不可达 / node not running or its "
                    "metrics endpoint did not answer)"}


def to_json(config: NodeConfig, status: NodeStatus, up: bool | None) -> dict[str, Any]:
    def head(found: HeadFact | None) -> dict[str, Any] | None:
        return None if found is None else {
            "size": found.size, "signed_at": found.at,
            "age_seconds": status.age_seconds(found)}

    return {
        "node_id": config.node_id, "district": config.district,
        "federated": config.federated,
        "link_up": up,
        "outbox": {"messages": status.outbox_pending,
                   "oldest_age_seconds": round(status.outbox_oldest_age_seconds, 3)},
        "last_delivery_seq": status.last_delivery_seq,
        "last_witnessed_head": head(status.verified),
        "final_head": head(status.final),
        "finality_lag_seconds": round(status.finality_lag_seconds, 3),
        "claims": dict(sorted(status.claims.items())),
    }


@guarded
def status_command(
    config_file: ConfigFile,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", metavar="HOST:PORT",
        help="Read the link's state from the node's metrics here (default: [server] "
             "metrics_listen).")] = None,
    as_json: AsJson = False,
) -> None:
    """节点状态 / The node's state: link to the clearinghouse up or down, outbox depth
    and oldest age, last delivery, last witnessed tree head and its age, finality lag,
    claims by state."""
    from node.bootstrap import open_app
    from node.usecases.status import node_status

    config = load_config(config_file)
    app = open_app(config)
    try:
        status = app.query(node_status)
    finally:
        app.db.dispose()
    up = link_state(metrics_url(metrics if metrics is not None else config.metrics_listen)) \
        if config.federated else None
    if as_json:
        print_json(to_json(config, status, up))
        return
    grid = label_grid()
    grid.add_row("节点 / node", f"{config.node_id} {escape(config.district)}")
    grid.add_row("清算链路 / link", _LINK_TEXT[up] if config.federated
                 else "未联网（独立运行）/ not federated (runs alone)")
    grid.add_row("待发消息 / outbox",
                 f"{status.outbox_pending} 条 / messages, 最久等待 / oldest waiting "
                 f"{_age(status.outbox_oldest_age_seconds)}")
    grid.add_row("最后送达 / last delivery", f"#{status.last_delivery_seq}")
    grid.add_row("最后见证树头 / last witnessed head", _head_text(status, status.verified))
    grid.add_row("最终树头 / final head", _head_text(status, status.final))
    lag = status.finality_lag_seconds
    grid.add_row("最终性滞后 / finality lag", _age(lag) if lag else "0（已最终 / final）")
    grid.add_row("结算单 / claims", ", ".join(f"{state} {count}" for state, count
                                            in sorted(status.claims.items())) or "无 / none")
    echo(grid)


__all__ = ["link_state", "metrics_url", "status_command", "to_json"]
