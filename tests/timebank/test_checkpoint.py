"""C2SP signed notes, checkpoints and cosignatures: formats, published vectors, rejections."""

from __future__ import annotations

import base64
import hashlib

import pytest
from nacl.signing import SigningKey

from timebank import checkpoint as cp
from timebank.checkpoint import Checkpoint, CheckpointError, NoteSignature, SignedNote

LOG = "nanjing.timebank.example/clearinghouse"
LOG_KEY = SigningKey(bytes(range(32)))
LOG_PUB = bytes(LOG_KEY.verify_key)
W1, W2, W3 = "gulou.timebank.example/w", "qinhuai.timebank.example/w", "xuanwu.timebank.example/w"
W1_KEY, W2_KEY, W3_KEY = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
W1_PUB, W2_PUB, W3_PUB = (bytes(k.verify_key) for k in (W1_KEY, W2_KEY, W3_KEY))
ROOT = hashlib.sha256(b"root").digest()
T = 1_767_225_600

# golang.org/x/mod/sumdb/note: note.go package docs and note_test.go (TestSign, TestOpen,
# TestNewVerifier). The signer key is PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01||seed)>.
PETER_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
)
PETER_NOTE = PETER_TEXT + "\n" + PETER_SIG


def checkpoint_text(size: int = 10, root: bytes = ROOT, *ext: str) -> str:
    return Checkpoint(LOG, size, root, tuple(ext)).body()


def signed_checkpoint(size: int = 10, root: bytes = ROOT, *ext: str) -> str:
    return cp.sign_note(checkpoint_text(size, root, *ext), LOG, LOG_KEY)


# --- published vectors ------------------------------------------------------------------------


def test_go_sumdb_note_vector_verifies() -> None:
    name, kh, pub = cp.parse_verifier_key(PETER_VKEY)
    assert (name, kh.hex()) == ("PeterNeumann", "c74f20a3")
    assert cp.verify_note(PETER_NOTE, name, pub) == PETER_TEXT
    assert cp.verifier_key(name, pub) == PETER_VKEY


def test_go_sumdb_note_vector_is_reproduced_by_sign_note() -> None:
    raw = base64.b64decode(PETER_SKEY_B64)
    assert raw[0] == cp.ALG_ED25519
    assert cp.sign_note(PETER_TEXT, "PeterNeumann", SigningKey(raw[1:])) == PETER_NOTE


def test_go_sumdb_two_signature_vector() -> None:
    note = PETER_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    enoch, _, enoch_pub = cp.parse_verifier_key(ENOCH_VKEY)
    _, _, peter_pub = cp.parse_verifier_key(PETER_VKEY)
    assert cp.verify_note(note, enoch, enoch_pub) == PETER_TEXT
    assert cp.verify_note(note, "PeterNeumann", peter_pub) == PETER_TEXT
    assert SignedNote.parse(note).format() == note


def test_go_sumdb_vector_with_corrupted_signature_fails() -> None:
    # note_test.go's "Invalid signature" case: four base64 characters inserted.
    _, _, pub = cp.parse_verifier_key(PETER_VKEY)
    bad = PETER_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(CheckpointError, match="invalid signature"):
        cp.verify_note(bad, "PeterNeumann", pub)


def test_published_cosigner_vkey_checks_the_0x04_key_hash() -> None:
    # A deployed witness's type-0x04 vkey (transparency-dev/formats note_cosigv1_test.go).
    vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    name, kh, pub = cp.parse_verifier_key(vkey, algorithm=cp.ALG_COSIGNATURE_V1)
    assert name == "remora.n621.de"
    assert kh == cp.key_hash(name, pub, cp.ALG_COSIGNATURE_V1) == bytes.fromhex("da77ade7")
    assert cp.verifier_key(name, pub, algorithm=cp.ALG_COSIGNATURE_V1) == vkey
    with pytest.raises(CheckpointError, match="signature type 0x04, expected 0x01"):
        cp.parse_verifier_key(vkey)


def test_spec_example_cosignature_layout() -> None:
    # c2sp.org/tlog-cosignature's example: key hash, then the big-endian time of its message.
    note = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
        "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJs"
        "X3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    parsed = SignedNote.parse(note)
    assert parsed.format() == note
    ckpt = Checkpoint.parse(parsed.text)
    assert (ckpt.origin, ckpt.size) == ("example.com/behind-the-sofa", 20852163)
    witness = parsed.signatures[1]
    assert witness.name == "witness.example.com/w1"
    assert len(witness.payload) == 8 + 64
    assert int.from_bytes(witness.payload[:8], "big") == 1679315147


# --- keys -------------------------------------------------------------------------------------


def test_key_hash_formula() -> None:
    for alg in (cp.ALG_ED25519, cp.ALG_COSIGNATURE_V1):
        want = hashlib.sha256(W1.encode() + b"\n" + bytes([alg]) + W1_PUB).digest()[:4]
        assert cp.key_hash(W1, W1_PUB, alg) == want
    assert cp.key_hash(W1, W1_PUB, 1) != cp.key_hash(W1, W1_PUB, 4)


def test_verifier_key_round_trip() -> None:
    vkey = cp.verifier_key(LOG, LOG_PUB)
    assert cp.parse_verifier_key(vkey) == (LOG, cp.key_hash(LOG, LOG_PUB), LOG_PUB)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeumann+c74f20g3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not hex
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # other name
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # bad base64
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",  # 34 bytes
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x65
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
    ],
)
def test_parse_verifier_key_rejects(bad: str) -> None:
    with pytest.raises(CheckpointError):
        cp.parse_verifier_key(bad)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u3000b", "x" * 256, "a\x01b"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(CheckpointError, match="key name"):
        cp.key_hash(name, LOG_PUB)
    with pytest.raises(CheckpointError, match="key name"):
        cp.sign_note("text\n", name, LOG_KEY)


def test_name_of_255_characters_is_allowed() -> None:
    name = "n" * 255
    assert cp.verify_note(cp.sign_note("hi\n", name, LOG_KEY), name, LOG_PUB) == "hi\n"


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_body_layout() -> None:
    ckpt = Checkpoint(LOG, 20852163, ROOT)
    assert ckpt.body() == f"{LOG}\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint.parse(ckpt.body()) == ckpt


@pytest.mark.parametrize("size", [0, 1, 10, 2**63 - 1])
def test_checkpoint_round_trip(size: int) -> None:
    ckpt = Checkpoint(LOG, size, ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(ckpt.body()) == ckpt
    assert Checkpoint.parse(ckpt.body()).body() == ckpt.body()


def test_chinese_extension_survives_utf8_round_trip() -> None:
    ext = "通存通兑 南京市鼓楼区时间银行"
    note = signed_checkpoint(10, ROOT, ext)
    wire = note.encode("utf-8")
    assert wire.decode("utf-8") == note
    text = cp.verify_note(wire.decode("utf-8"), LOG, LOG_PUB)
    assert Checkpoint.parse(text).extensions == (ext,)
    line = cp.cosign(text, W1, W1_KEY, T)
    cosigned = cp.add_signatures(note, line)
    assert cp.verify_cosignature(cosigned, W1, W1_PUB) == T
    assert SignedNote.parse(cosigned).format().encode("utf-8") == cosigned.encode("utf-8")


ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"{LOG}\n10\n{ROOT_B64}", "newline"),  # missing final newline
        (f"{LOG}\n10\n", "at least 3"),
        ("", "newline"),
        (f"\n10\n{ROOT_B64}\n", "origin line is empty"),
        (f"{LOG}\n010\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n+10\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n-1\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n 10\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n1_0\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n١٠\n{ROOT_B64}\n", "canonical decimal"),  # Arabic-Indic digits
        (f"{LOG}\n\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n{2**63}\n{ROOT_B64}\n", "2\\*\\*63"),
        (f"{LOG}\n{10**19}\n{ROOT_B64}\n", "canonical decimal"),
        (f"{LOG}\n10\n{ROOT_B64.rstrip('=')}\n", "base64"),  # unpadded
        (f"{LOG}\n10\n{ROOT_B64[:-2]}!=\n", "base64"),
        (f"{LOG}\n10\n{URLSAFE_ROOT}\n", "base64"),
        (f"{LOG}\n10\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{LOG}\n10\n{base64.b64encode(ROOT + b'x').decode()}\n", "33 bytes"),
        (f"{LOG}\n10\n{ROOT_B64}\n\n", "extension line\\) is empty"),
        (f"{LOG}\n10\n{ROOT_B64}\next\n\n", "extension line\\) is empty"),
        (f"{LOG}\r\n10\n{ROOT_B64}\n", "control character"),
        (f"{LOG}\n10\n{ROOT_B64}\nbad\x00ext\n", "control character"),
    ],
)
def test_checkpoint_parse_rejects(text: str, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        Checkpoint.parse(text)


def test_checkpoint_parse_rejects_non_canonical_base64_root() -> None:
    # Same 32 bytes, but the unused low bits of the last character are set.
    good = base64.b64encode(bytes(32)).decode()
    assert good.endswith("A=")
    with pytest.raises(CheckpointError, match="canonical"):
        Checkpoint.parse(f"{LOG}\n10\n{good[:-2]}B=\n")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": -1},
        {"size": 2**63},
        {"size": True},
        {"root": ROOT[:31]},
        {"origin": ""},
        {"origin": "a\nb"},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
    ],
)
def test_checkpoint_constructor_validates(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"origin": LOG, "size": 1, "root": ROOT, "extensions": ()}
    args.update(kwargs)
    with pytest.raises(CheckpointError):
        Checkpoint(**args)  # type: ignore[arg-type]


# --- signed notes -----------------------------------------------------------------------------


def test_signed_note_layout_and_round_trip() -> None:
    note = signed_checkpoint()
    text = checkpoint_text()
    kh = cp.key_hash(LOG, LOG_PUB)
    sig = LOG_KEY.sign(text.encode()).signature
    assert note == f"{text}\n— {LOG} {base64.b64encode(kh + sig).decode()}\n"
    parsed = SignedNote.parse(note)
    assert parsed.text == text
    assert parsed.signatures == (NoteSignature(LOG, kh, sig),)
    assert parsed.format() == note
    assert cp.verify_note(note, LOG, LOG_PUB) == text


def test_note_text_may_contain_blank_lines() -> None:
    text = "first\n\nthird\n"
    note = cp.sign_note(text, LOG, LOG_KEY)
    assert SignedNote.parse(note).text == text
    assert cp.verify_note(note, LOG, LOG_PUB) == text


def test_unknown_signature_types_survive_round_trip() -> None:
    line = "— other.example/key " + base64.b64encode(b"\x01\x02\x03\x04\x05").decode() + "\n"
    note = signed_checkpoint() + line
    assert SignedNote.parse(note).format() == note
    assert cp.verify_note(note, LOG, LOG_PUB) == checkpoint_text()


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        ("", "no blank line"),  # text only
        ("\n", "no signature lines"),
        ("\n— " + LOG + " AAAAAAA=", "end in a newline"),
        ("\n- " + LOG + " AAAAAAA=\n", "em dash"),
        ("\n—" + LOG + " AAAAAAA=\n", "em dash"),
        ("\n— " + LOG + "\n", "no signature"),
        ("\n— " + LOG + " \n", "no signature"),
        ("\n— bad name AAAAAAA=\n", "base64"),
        ("\n— a+b AAAAAAA=\n", "'\\+'"),
        ("\n— " + LOG + " AAAAAA==\n", "too short"),  # 4 bytes: key hash only
        ("\n— " + LOG + " AAAAAAA\n", "base64"),  # unpadded
        ("\n— " + LOG + " AAAAAAA=\nUnexpected line.\n", "em dash"),
        ("\n— " + LOG + " AAAAAAA=\n\n", "no signature lines"),
    ],
)
def test_signed_note_parse_rejects(tail: str, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        SignedNote.parse(checkpoint_text() + tail)


@pytest.mark.parametrize("prefix", ["\x01", "\x7f", "\ud800"])
def test_signed_note_rejects_control_characters_and_invalid_utf8(prefix: str) -> None:
    with pytest.raises(CheckpointError):
        SignedNote.parse(prefix + PETER_NOTE)


def test_signature_line_limit() -> None:
    at_limit = PETER_TEXT + "\n" + PETER_SIG * cp.MAX_SIGNATURES
    assert len(SignedNote.parse(at_limit).signatures) == cp.MAX_SIGNATURES
    with pytest.raises(CheckpointError, match="more than 100"):
        SignedNote.parse(at_limit + PETER_SIG)


def test_size_limit() -> None:
    big = "x" * (cp.MAX_NOTE_BYTES - 200) + "\n"
    assert SignedNote.parse(big + "\n" + PETER_SIG).text == big
    with pytest.raises(CheckpointError, match="longer than"):
        SignedNote.parse("x" * cp.MAX_NOTE_BYTES + "\n\n" + PETER_SIG)
    # The bound is in UTF-8 bytes, not characters.
    with pytest.raises(CheckpointError, match="longer than"):
        SignedNote.parse("时" * (cp.MAX_NOTE_BYTES // 3) + "\n\n" + PETER_SIG)


def test_sign_note_requires_final_newline() -> None:
    with pytest.raises(CheckpointError, match="newline"):
        cp.sign_note("abc", LOG, LOG_KEY)


# --- verify_note failures ---------------------------------------------------------------------


def test_signature_by_another_key_fails() -> None:
    note = cp.sign_note(checkpoint_text(), LOG, W1_KEY)  # right name, wrong key
    with pytest.raises(CheckpointError, match="no signature"):
        cp.verify_note(note, LOG, LOG_PUB)


def test_signature_line_with_right_name_and_wrong_key_hash_is_not_counted() -> None:
    good = SignedNote.parse(signed_checkpoint())
    sig = good.signatures[0]
    forged = SignedNote(good.text, (NoteSignature(LOG, b"\x00\x00\x00\x00", sig.payload),))
    with pytest.raises(CheckpointError, match="no signature"):
        cp.verify_note(forged.format(), LOG, LOG_PUB)


def test_other_name_fails() -> None:
    with pytest.raises(CheckpointError, match="no signature"):
        cp.verify_note(signed_checkpoint(), "other.example/log", LOG_PUB)


def test_modified_body_fails() -> None:
    note = signed_checkpoint()
    tampered = note.replace(LOG, LOG + "x", 1)
    with pytest.raises(CheckpointError):
        cp.verify_note(tampered, LOG, LOG_PUB)


@pytest.mark.parametrize(
    "other", [checkpoint_text(11), checkpoint_text(10, hashlib.sha256(b"other").digest())]
)
def test_changed_size_or_root_fails(other: str) -> None:
    sig_lines = signed_checkpoint().split("\n\n", 1)[1]
    with pytest.raises(CheckpointError, match="invalid signature"):
        cp.verify_note(other + "\n" + sig_lines, LOG, LOG_PUB)


def test_truncated_base64_fails() -> None:
    note = signed_checkpoint()
    line = note.split("\n\n", 1)[1].rstrip("\n")
    for cut in (4, 8, 40):
        with pytest.raises(CheckpointError):
            cp.verify_note(checkpoint_text() + "\n" + line[:-cut] + "\n", LOG, LOG_PUB)


def test_truncated_but_well_formed_signature_fails() -> None:
    parsed = SignedNote.parse(signed_checkpoint())
    sig = parsed.signatures[0]
    short = NoteSignature(sig.name, sig.key_hash, sig.payload[:-3])
    with pytest.raises(CheckpointError, match="invalid signature"):
        cp.verify_note(SignedNote(parsed.text, (short,)).format(), LOG, LOG_PUB)


def test_flipped_signature_bit_fails() -> None:
    parsed = SignedNote.parse(signed_checkpoint())
    sig = parsed.signatures[0]
    flipped = bytes([sig.payload[0] ^ 1]) + sig.payload[1:]
    bad = SignedNote(parsed.text, (NoteSignature(sig.name, sig.key_hash, flipped),))
    with pytest.raises(CheckpointError, match="invalid signature"):
        cp.verify_note(bad.format(), LOG, LOG_PUB)


def test_a_bad_line_for_the_key_rejects_the_note_even_beside_a_good_one() -> None:
    parsed = SignedNote.parse(signed_checkpoint())
    sig = parsed.signatures[0]
    bad = NoteSignature(sig.name, sig.key_hash, bytes(64))
    for order in ((sig, bad), (bad, sig)):
        with pytest.raises(CheckpointError, match="invalid signature"):
            cp.verify_note(SignedNote(parsed.text, order).format(), LOG, LOG_PUB)


def test_cosignature_does_not_pass_as_note_signature() -> None:
    text = checkpoint_text()
    note = cp.add_signatures(signed_checkpoint(), cp.cosign(text, LOG, LOG_KEY, T))
    # Same name and key, but type 0x04: a different key hash, so it is not a note signature.
    only_cosig = SignedNote(text, SignedNote.parse(note).signatures[1:]).format()
    with pytest.raises(CheckpointError, match="no signature"):
        cp.verify_note(only_cosig, LOG, LOG_PUB)


def test_wrong_public_key_length_is_refused() -> None:
    with pytest.raises(CheckpointError, match="32 bytes"):
        cp.verify_note(signed_checkpoint(), LOG, LOG_PUB[:31])


# --- cosignatures -----------------------------------------------------------------------------


def test_cosignature_layout() -> None:
    text = checkpoint_text(5, ROOT, "extension")
    line = cp.cosign(text, W1, W1_KEY, T)
    sig = NoteSignature.parse_line(line)
    assert line.startswith(f"— {W1} ") and line.endswith("\n")
    assert sig.key_hash == hashlib.sha256(W1.encode() + b"\n\x04" + W1_PUB).digest()[:4]
    assert sig.payload[:8] == T.to_bytes(8, "big")
    message = f"cosignature/v1\ntime {T}\n{text}".encode()
    assert cp.cosignature_message(text, T) == message
    W1_KEY.verify_key.verify(message, sig.payload[8:])  # raises if not over that message


def test_cosignatures_verify_and_cosigners_reports_the_valid_ones() -> None:
    text = checkpoint_text()
    note = cp.add_signatures(
        signed_checkpoint(),
        cp.cosign(text, W1, W1_KEY, T),
        cp.cosign(text, W2, W2_KEY, T + 5),
        cp.cosign(checkpoint_text(9), W3, W3_KEY, T),  # over another checkpoint
    )
    assert cp.verify_note(note, LOG, LOG_PUB) == text
    assert cp.verify_cosignature(note, W1, W1_PUB) == T
    assert cp.verify_cosignature(note, W2, W2_PUB) == T + 5
    with pytest.raises(CheckpointError, match="invalid cosignature"):
        cp.verify_cosignature(note, W3, W3_PUB)
    unknown = SigningKey(bytes([9]) * 32)
    witnesses = {W1: W1_PUB, W2: W2_PUB, "unknown.example/w": bytes(unknown.verify_key)}
    assert cp.cosigners(note, witnesses) == {W1: T, W2: T + 5}
    # W2's line checked against W1's key: another key hash, so not a line of that key.
    assert cp.cosigners(note, {W2: W1_PUB}) == {}
    # W3's line is over another checkpoint: a known key's failed line rejects the note.
    with pytest.raises(CheckpointError, match=f"invalid cosignature by {W3}"):
        cp.cosigners(note, {**witnesses, W3: W3_PUB})


def test_cosigners_ignores_a_line_under_a_known_name_but_another_key_hash() -> None:
    text = checkpoint_text()
    forged = cp.cosign(text, W1, W2_KEY, T)  # W1's name, W2's key: other key hash
    note = cp.add_signatures(signed_checkpoint(), forged)
    assert cp.cosigners(note, {W1: W1_PUB}) == {}
    with pytest.raises(CheckpointError, match="no cosignature"):
        cp.verify_cosignature(note, W1, W1_PUB)


def test_a_failed_line_claiming_a_known_key_rejects_the_note() -> None:
    text = checkpoint_text()
    kh = cp.key_hash(W1, W1_PUB, cp.ALG_COSIGNATURE_V1)
    garbage = NoteSignature(W1, kh, T.to_bytes(8, "big") + bytes(64)).line()  # right hash
    note = cp.add_signatures(signed_checkpoint(), cp.cosign(text, W2, W2_KEY, T)) + garbage
    with pytest.raises(CheckpointError, match=f"invalid cosignature by {W1}"):
        cp.cosigners(note, {W1: W1_PUB, W2: W2_PUB})
    with pytest.raises(CheckpointError, match="invalid cosignature"):
        cp.verify_cosignature(note, W1, W1_PUB)
    # ... even next to a valid line of the same key: the note was tampered with.
    both = note + cp.cosign(text, W1, W1_KEY, T)
    with pytest.raises(CheckpointError, match=f"invalid cosignature by {W1}"):
        cp.cosigners(both, {W1: W1_PUB})
    # A verifier that does not know W1 still counts W2.
    assert cp.cosigners(both, {W2: W2_PUB}) == {W2: T}
    good = cp.add_signatures(note, cp.cosign(text, W1, W1_KEY, T + 1))
    # add_signatures replaced the garbage line (same name and key hash) with the good one.
    assert cp.verify_cosignature(good, W1, W1_PUB) == T + 1
    assert cp.cosigners(good, {W1: W1_PUB, W2: W2_PUB}) == {W1: T + 1, W2: T}


@pytest.mark.parametrize("ahead", [0, 1, cp.MAX_COSIGNATURE_SKEW])
def test_a_cosignature_within_the_clock_skew_counts(ahead: int) -> None:
    note = cp.add_signatures(signed_checkpoint(), cp.cosign(checkpoint_text(), W1, W1_KEY,
                                                             T + ahead))
    assert cp.cosigners(note, {W1: W1_PUB}, now=T) == {W1: T + ahead}
    assert cp.verify_cosignature(note, W1, W1_PUB, now=T) == T + ahead


@pytest.mark.parametrize("ahead", [cp.MAX_COSIGNATURE_SKEW + 1, 86_400, cp.MAX_UINT63 - T])
def test_a_cosignature_dated_beyond_the_clock_skew_is_refused(ahead: int) -> None:
    line = cp.cosign(checkpoint_text(), W1, W1_KEY, T + ahead)
    note = cp.add_signatures(signed_checkpoint(), line, cp.cosign(checkpoint_text(), W2,
                                                                  W2_KEY, T))
    with pytest.raises(CheckpointError, match=f"cosignature by {W1}.* is dated .* after this "
                                              "clock.* 300 s of clock skew"):
        cp.cosigners(note, {W1: W1_PUB, W2: W2_PUB}, now=T)
    with pytest.raises(CheckpointError, match="clock skew"):
        cp.verify_cosignature(note, W1, W1_PUB, now=T)
    # Without a clock (an offline verifier) the time is not judged; another witness's
    # lines are judged on their own.
    assert cp.cosigners(note, {W1: W1_PUB, W2: W2_PUB}) == {W1: T + ahead, W2: T}
    assert cp.cosigners(note, {W2: W2_PUB}, now=T) == {W2: T}


@pytest.mark.parametrize("now", [-1, 2**63, True, 1.5, "1"])
def test_a_malformed_clock_is_refused(now: object) -> None:
    note = cp.add_signatures(signed_checkpoint(), cp.cosign(checkpoint_text(), W1, W1_KEY, T))
    with pytest.raises(CheckpointError, match="clock"):
        cp.cosigners(note, {W1: W1_PUB}, now=now)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="clock"):
        cp.verify_cosignature(note, W1, W1_PUB, now=now)  # type: ignore[arg-type]


def test_cosignature_over_one_checkpoint_does_not_verify_over_another() -> None:
    line = cp.cosign(checkpoint_text(10), W1, W1_KEY, T)
    assert cp.verify_cosignature(cp.add_signatures(signed_checkpoint(10), line), W1, W1_PUB) == T
    for other in (
        signed_checkpoint(11),
        signed_checkpoint(10, hashlib.sha256(b"fork").digest()),
        signed_checkpoint(10, ROOT, "extra"),
    ):
        note = cp.add_signatures(other, line)
        with pytest.raises(CheckpointError, match="invalid cosignature"):
            cp.verify_cosignature(note, W1, W1_PUB)
        with pytest.raises(CheckpointError, match="invalid cosignature"):
            cp.cosigners(note, {W1: W1_PUB})


def test_cosignature_timestamp_is_signed() -> None:
    text = checkpoint_text()
    sig = NoteSignature.parse_line(cp.cosign(text, W1, W1_KEY, T))
    moved = NoteSignature(sig.name, sig.key_hash, (T + 1).to_bytes(8, "big") + sig.payload[8:])
    note = signed_checkpoint() + moved.line()
    with pytest.raises(CheckpointError, match="invalid cosignature"):
        cp.verify_cosignature(note, W1, W1_PUB)


def test_cosignature_with_timestamp_at_or_above_2_63_is_refused() -> None:
    with pytest.raises(CheckpointError, match="2\\*\\*63"):
        cp.cosign(checkpoint_text(), W1, W1_KEY, 2**63)
    with pytest.raises(CheckpointError):
        cp.cosign(checkpoint_text(), W1, W1_KEY, -1)
    assert (
        cp.verify_cosignature(
            signed_checkpoint() + cp.cosign(checkpoint_text(), W1, W1_KEY, 2**63 - 1), W1, W1_PUB
        )
        == 2**63 - 1
    )


def test_cosignature_with_wrong_payload_length_fails() -> None:
    sig = NoteSignature.parse_line(cp.cosign(checkpoint_text(), W1, W1_KEY, T))
    short = NoteSignature(sig.name, sig.key_hash, sig.payload[:-1])
    with pytest.raises(CheckpointError, match="invalid cosignature"):
        cp.verify_cosignature(signed_checkpoint() + short.line(), W1, W1_PUB)


def test_cosign_refuses_what_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError):
        cp.cosign(signed_checkpoint(), W1, W1_KEY, T)  # a whole signed note, not its text
    with pytest.raises(CheckpointError):
        cp.cosign(PETER_TEXT, W1, W1_KEY, T)


def test_missing_cosignature_raises() -> None:
    with pytest.raises(CheckpointError, match="no cosignature"):
        cp.verify_cosignature(signed_checkpoint(), W1, W1_PUB)


def test_note_signature_does_not_pass_as_cosignature() -> None:
    note = cp.sign_note(checkpoint_text(), W1, W1_KEY)
    with pytest.raises(CheckpointError, match="no cosignature"):
        cp.verify_cosignature(note, W1, W1_PUB)
    assert cp.cosigners(note, {W1: W1_PUB}) == {}


def test_add_signatures_checks_lines_and_limits() -> None:
    with pytest.raises(CheckpointError, match="em dash"):
        cp.add_signatures(signed_checkpoint(), "not a signature line\n")
    note = PETER_TEXT + "\n" + PETER_SIG * cp.MAX_SIGNATURES
    with pytest.raises(CheckpointError, match="more than 100"):
        cp.add_signatures(note, ENOCH_SIG)


def test_cosigners_refuses_malformed_witness_keys() -> None:
    with pytest.raises(CheckpointError, match="32 bytes"):
        cp.cosigners(signed_checkpoint(), {W1: W1_PUB[:16]})
