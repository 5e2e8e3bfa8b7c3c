"""A city act carried to the offline root key and back: one small text file (ADR 0018).

The clearinghouse *prepares* an act (``timebank clearinghouse prepare ...``): the exact
bytes the root key will sign (kind and body; the envelope's signing input is made from
them and nothing else) and, as comment lines, what they say, Chinese first. The bureau
carries the file to the offline machine, where ``timebank city sign`` parses it, shows
what the body says (worked out again from the body, never from the comments), signs it
with the root key file alone and writes the same file with the signature added. The
clearinghouse *imports* the signed file, checks it under the city's keys and only then
stores it. Pure: text in, text out.

The format, line by line (UTF-8, ``#`` lines are comments)::

    timebank-city-act v1
    kind <envelope kind>
    key <key id of the root key that is to sign>
    body <base64 of the body>
    signature <base64 of the Ed25519 signature>     (signed files only)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from timebank import admissions, citykeys
from timebank import roster as rosters
from timebank.envelope import CITY, MAX_BODY_BYTES, SIGNATURE_LEN, Signed, signing_input
from timebank.keys import SigningKey, key_id, public_key
from timebank.policy import PolicyError, load_policy, policy_sha256
from timebank.v1 import clearing_pb2 as pb

__all__ = ["MAGIC", "MAX_FILE_BYTES", "ActFile", "ActFileError", "describe", "parse",
           "render", "sign_act"]

MAGIC = "timebank-city-act v1"
#: The largest act file: a body of 64 KiB in base64, its summary and a few lines.
MAX_FILE_BYTES = 4 * MAX_BODY_BYTES
_KEY_ID_LEN = 16


class ActFileError(ValueError):
    """The file is not a city act this software can show and sign; the message says why."""


@dataclass(frozen=True, slots=True)
class ActFile:
    """What an act file holds: the kind and body to sign, the key id of the root key
    that is to sign them, and the signature once signed."""

    kind: str
    body: bytes
    key_id: str
    signature: bytes | None = None

    @property
    def envelope(self) -> Signed:
        """The signed envelope (only for a signed file)."""
        if self.signature is None:
            raise ActFileError("该文件尚未签名 / the act is not signed yet: "
                               "`timebank city sign` it first")
        return Signed(self.kind, self.body, CITY, self.key_id, self.signature)


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(kind: str, body: bytes) -> list[str]:
    """What the body of a city act of ``kind`` says, one line each, Chinese first; raises
    ``ActFileError`` if it is not a well-formed act of that kind (never sign what a
    reader would refuse)."""
    try:
        return _describe(kind, body)
    except (DecodeError, admissions.AdmissionsError, rosters.RosterError,
            citykeys.KeyChainError, PolicyError, ValueError) as e:
        raise ActFileError(f"无法解析的 {kind[:32]!r} 文件，拒绝签署 / the body is not a "
                           f"well-formed {kind[:32]!r} act: {e}") from None


def _describe(kind: str, body: bytes) -> list[str]:
    if kind == admissions.ADMISSION:
        cert = admissions.certificate_of(body)
        return [f"准入证书 admission: 区 district {cert.node_id} {cert.district}",
                f"  节点密钥 node key {cert.key_id} ({cert.public_key.hex()})",
                f"  序号 serial {cert.serial}"]
    if kind == admissions.REVOCATION:
        act = pb.Revocation.FromString(body)
        node_id, kid = admissions.revocation_of(body)
        return [f"吊销密钥 revocation: 区 district {node_id} 的密钥 key {kid}（永久 for ever）",
                f"  原因 reason: {act.reason[:200]}"]
    if kind == rosters.KIND:
        named = pb.Roster.FromString(body)
        members = rosters.members_of(named)
        return [f"城市名册 roster: 第 {named.epoch} 期 epoch, {len(members)} 个区 districts",
                *(f"  {m.node_id} {m.district} key {key_id(m.public_key)} serial {m.serial}"
                  for m in members)]
    if kind == admissions.POLICY:
        policy = pb.CityPolicy.FromString(body)
        load_policy(policy.policy_toml)
        return [f"城市政策 policy: 序号 serial {policy.serial}",
                f"  生效 effective {_when(policy.effective_at.seconds)}",
                f"  sha256 {policy_sha256(policy.policy_toml).hex()}"]
    if kind == citykeys.CITY_KEY:
        r = citykeys.read_root_rotation(body)
        return [f"城市根密钥轮换 city root key rotation #{r.serial}: "
                f"{key_id(r.old_key)} → {key_id(r.new_key)}",
                f"  新根密钥 new root key {r.new_key.hex()}",
                f"  旧密钥签署且继续有效的文件 acts of the old key kept valid: "
                f"{len(r.valid_acts)}; 其余一律拒绝 all others refused",
                "  新根密钥会签 countersigned by the new key: "
                + ("是 yes" if r.countersigned else "否 no (`timebank city sign --new-key`)")]
    if kind == citykeys.CLEARINGHOUSE_KEY:
        c = citykeys.read_clearinghouse_rotation(body)
        return [f"清算中心密钥轮换 clearinghouse key rotation #{c.serial}: "
                f"{key_id(c.old_key)} → {key_id(c.new_key)}",
                f"  新密钥 new key {c.new_key.hex()}",
                f"  自树大小 from tree size {c.effective_size} 起由新密钥签署 heads are "
                "signed by the new key"]
    if kind == admissions.SETTLEMENT_DECISION:
        d = pb.SettlementDecision.FromString(body)
        what = ("修订 revise: 排除账目 leaves out " + ", ".join(d.excluded_claim_ids[:20])
                + (" ..." if len(d.excluded_claim_ids) > 20 else "")) if d.revise else (
            "维持 uphold: 驳回 overrules " + ", ".join(d.overruled_node_ids))
        return [f"结算裁决 settlement decision: 结算单 statement {d.serial} 第 {d.revision} 版 "
                f"revision", f"  {what}",
                f"  结算单标识 statement identity {d.statement_sha256.hex()}",
                f"  理由 reason: {d.reason[:200]}"]
    if kind == admissions.SETTLEMENT_DEFAULT:
        f = pb.SettlementDefault.FromString(body)
        return [f"结算违约 settlement default: 区 district {f.node_id} 结算单 statement "
                f"{f.serial}",
                f"  未付 unpaid {f.unpaid_minutes} 分钟 minutes, {f.unpaid_fen} 分 fen; "
                f"处理 treatment {f.treatment}",
                f"  结算单标识 statement identity {f.statement_sha256.hex()}",
                f"  理由 reason: {f.reason[:200]}"]
    raise ActFileError(f"不是城市文件类型 / {kind[:32]!r} is not a kind of city act")


def render(act: ActFile) -> str:
    """The file for ``act``: its summary as comments, then its fields."""
    lines = ["# 城市根密钥待签文件：用 `timebank city sign` 签署，"
             "再用 `timebank clearinghouse import` 导入",
             "# A city act for the offline root key: sign with `timebank city sign`, then "
             "`timebank clearinghouse import`.",
             *(f"# {line}" for line in describe(act.kind, act.body)),
             MAGIC,
             f"kind {act.kind}",
             f"key {act.key_id}",
             f"body {base64.b64encode(act.body).decode('ascii')}"]
    if act.signature is not None:
        lines.append(f"signature {base64.b64encode(act.signature).decode('ascii')}")
    return "\n".join(lines) + "\n"


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ActFileError(f"文件的 {what} 不是 base64 / the act's {what} is not "
                           "base64") from None


def parse(data: bytes) -> ActFile:
    """The act in a file's bytes, every field checked and the body understood
    (``describe``); raises ``ActFileError``."""
    if len(data) > MAX_FILE_BYTES:
        raise ActFileError(f"文件过大 / an act file is at most {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ActFileError("不是城市文件（非 UTF-8 文本）/ not a city act file (not UTF-8 "
                           "text)") from None
    fields = [line for line in text.splitlines() if line and not line.startswith("#")]
    if not fields or fields[0] != MAGIC:
        raise ActFileError(f"不是城市文件 / not a city act file (its first line is not "
                           f"{MAGIC!r})")
    names = ["kind", "key", "body", "signature"]
    values: dict[str, str] = {}
    for line, name in zip(fields[1:], names, strict=False):
        found, _, value = line.partition(" ")
        if found != name or not value:
            raise ActFileError(f"文件格式错误 / the act file's line {line[:40]!r} is not "
                               f"'{name} ...'")
        values[name] = value
    if len(fields) - 1 not in (3, 4):
        raise ActFileError("文件格式错误 / an act file has kind, key, body and, once "
                           "signed, signature lines, nothing more")
    kid = values["key"]
    if len(kid) != _KEY_ID_LEN or any(c not in "0123456789abcdef" for c in kid):
        raise ActFileError("文件的密钥编号无效 / the act's key id is not 16 hex characters")
    body = _b64(values["body"], "body")
    if len(body) > MAX_BODY_BYTES:
        raise ActFileError(f"the act's body is more than {MAX_BODY_BYTES} bytes")
    signature = _b64(values["signature"], "signature") if "signature" in values else None
    if signature is not None and len(signature) != SIGNATURE_LEN:
        raise ActFileError(f"the act's signature is not {SIGNATURE_LEN} bytes")
    describe(values["kind"], body)
    return ActFile(values["kind"], body, kid, signature)


def sign_act(act: ActFile, key: SigningKey, new_root: SigningKey | None = None) -> ActFile:
    """The act signed by ``key``, which must be the root key the act was prepared for;
    a rotation of the root key countersigned first by ``new_root``, if given."""
    if act.signature is not None:
        raise ActFileError("该文件已签名 / the act is signed already")
    if new_root is not None:
        if act.kind != citykeys.CITY_KEY:
            raise ActFileError("只有根密钥轮换需要新密钥会签 / only a rotation of the city root "
                               "key is countersigned by the new key")
        try:
            act = ActFile(act.kind, citykeys.countersigned_body(act.body, new_root),
                          act.key_id)
        except citykeys.KeyChainError as e:
            raise ActFileError(e.message) from None
    found = key_id(public_key(key))
    if found != act.key_id:
        raise ActFileError(f"此文件应由根密钥 {act.key_id} 签署，密钥文件是 {found} / the act "
                           f"is to be signed by city key {act.key_id}; the key file holds "
                           f"{found}")
    signature = key.sign(signing_input(act.kind, act.body)).signature
    return ActFile(act.kind, act.body, act.key_id, signature)
