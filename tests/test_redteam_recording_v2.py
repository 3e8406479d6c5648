"""Red team: recording format version 2 (BLAKE3, AES-256-GCM or ChaCha20-Poly1305) and the AES-GCM
SSH packet cipher (bastion/ssh/gcm.py).

The recording attacks are made from FORMAT.md with a small independent implementation (frames,
hashes, key unwrapping, chunk sealing, signature bodies), in two roles:

- someone who can edit recording files but holds no key: relabelled versions and ciphers, edited
  and malformed headers, spliced chunks and signature frames, truncation, huge values;
- an auditor, who can unwrap the file key with an X25519 key and so re-encrypt chunks and the
  metadata under either AEAD, but cannot sign: only the signatures and the hash chain stand in
  the way.

Attacks that succeeded when this file was written, and were fixed: dropping the header's
signature frame (a cut-off file's edited header then verified as merely cut off), cleared
keyframe flags (seek showed a blank screen without decrypting), a header with rows 2**62, a
5000-digit number or 5000-deep nesting in the header (bare ValueError, RecursionError), and
headers signed but not as FORMAT.md allows (version 2.0, a key twice, UTF-16).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh.encryption
import blake3
import pytest
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh import gcm
from recorder import (
    MAX_ROWS,
    CorruptRecording,
    Event,
    KeyframeEvent,
    NotARecording,
    OutputEvent,
    RecordingReader,
    RecordingWriter,
    VerifyResult,
    VerifyStatus,
    WriterSettings,
    generate_auditor_key,
    generate_signing_key,
    load_auditor_private_key,
    load_signing_public_key,
    read_header_unencrypted,
    verify_recording,
)
from recorder.crypto import _has_aes_instructions

# -- FORMAT.md, independently ------------------------------------------------------------------

MAGIC = b"\x89BSTREC"
CHAIN_CTX = b"bastion-recording chain v1\x00"
SIG_CTX = b"bastion-recording signature v1\x00"
AAD_CTX = b"bastion-recording chunk v1\x00"
WRAP_INFO = b"bastion-recording v1 X25519 wrap"
PAYLOAD_INFO = b"bastion-recording v1 payload"
METADATA_INFO = b"bastion-recording v1 metadata"
AEADS: dict[str, type[AESGCM] | type[ChaCha20Poly1305]] = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}
OTHER = {"aes-256-gcm": "chacha20-poly1305", "chacha20-poly1305": "aes-256-gcm"}
BOTH = sorted(AEADS)
V1 = Path(__file__).parent / "data" / "recording-v1"
MAX_FRAME = 64 * 1024 * 1024
MAX_HEADER = 1024 * 1024


def digest(version: int, data: bytes) -> bytes:
    """H of FORMAT.md: SHA-256 in version 1, BLAKE3 (32 bytes) in version 2."""
    return hashlib.sha256(data).digest() if version == 1 else blake3.blake3(data).digest()


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def frame(kind: str, body: bytes, length: int | None = None) -> bytes:
    """A frame whose header claims `length` (default: the body's), with a valid CRC."""
    type_len = struct.pack(">BI", ord(kind), len(body) if length is None else length)
    return type_len + struct.pack(">I", zlib.crc32(type_len)) + body


def nonce(index: int, final: bool) -> bytes:
    return b"\x00\x00\x00" + struct.pack(">QB", index, 1 if final else 0)


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Frame:
    kind: str
    start: int
    raw: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.raw)

    @property
    def body(self) -> bytes:
        return self.raw[9:]

    @property
    def covered(self) -> int:
        """A signature frame's `covered` field."""
        assert self.kind == "S"
        return int(struct.unpack_from(">Q", self.body)[0])


def parse(data: bytes) -> tuple[int, list[Frame]]:
    """The version byte and the frames of a well-formed file."""
    assert data[:7] == MAGIC
    frames, pos = [], 8
    while pos < len(data):
        ftype, length, crc = struct.unpack_from(">BII", data, pos)
        assert zlib.crc32(data[pos : pos + 5]) == crc
        frames.append(Frame(chr(ftype), pos, data[pos : pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data)
    return data[7], frames


def splice(data: bytes, frames: list[Frame], i: int, replacement: bytes) -> bytes:
    """The file with frame number `i` replaced."""
    return data[: frames[i].start] + replacement + data[frames[i].end :]


def rewrite_header(data: bytes, *, edit: Callable[[dict[str, Any]], None] | None = None,
                   body: bytes | None = None, preamble: int | None = None) -> bytes:
    """What someone without any key can do: change the header frame (and the version byte)."""
    version, frames = parse(data)
    if body is None:
        obj = json.loads(frames[0].body)
        assert edit is not None
        edit(obj)
        body = compact(obj)
    rest = b"".join(f.raw for f in frames[1:])
    return MAGIC + bytes([version if preamble is None else preamble]) + frame("H", body) + rest


def unwrap(header: dict[str, Any], identity: X25519PrivateKey) -> bytes:
    """The file key, as section 3 says an auditor gets it."""
    mine = raw(identity.public_key())
    file_id = base64.b64decode(header["file_id"])
    for stanza in header["recipients"]:
        ephemeral = base64.b64decode(stanza["ephemeral"])
        shared = identity.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        wrap_key = hkdf(shared, ephemeral + mine, WRAP_INFO)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), base64.b64decode(stanza["wrapped_key"]),
                                                      file_id)
        except InvalidTag:
            continue
    raise AssertionError("not a recipient")


def reseal(data: bytes, identity: X25519PrivateKey, *, version: int | None = None,
           cipher: str | None = None, edit: Callable[[dict[str, Any]], None] | None = None,
           plaintext: Callable[[int, bytes], bytes] | None = None) -> bytes:
    """What an auditor can do: decrypt every chunk and the metadata, then write a new header
    (another version, cipher, fields) and seal every chunk again for it, under the same derived
    keys and nonces, with the new header's hash in the AAD. Signature frames are kept as they are
    (the auditor cannot sign)."""
    old_version, frames = parse(data)
    header = json.loads(frames[0].body)
    file_key, file_id = unwrap(header, identity), base64.b64decode(header["file_id"])
    new_version, new_cipher = version or old_version, cipher or header["cipher"]
    old_aead, new_aead = AEADS[header["cipher"]], AEADS[new_cipher]
    meta_key, payload_key = hkdf(file_key, file_id, METADATA_INFO), hkdf(file_key, file_id, PAYLOAD_INFO)
    metadata = old_aead(meta_key).decrypt(bytes(12), base64.b64decode(header["metadata"]), None)
    header.update(version=new_version, cipher=new_cipher, metadata=base64.b64encode(
        new_aead(meta_key).encrypt(bytes(12), metadata, None)).decode())
    if edit is not None:
        edit(header)
    header_frame = frame("H", compact(header))
    old_hash, new_hash = digest(old_version, frames[0].raw), digest(new_version, header_frame)
    out = [MAGIC + bytes([new_version]), header_frame]
    for f in frames[1:]:
        if f.kind != "C":
            out.append(f.raw)
            continue
        prefix = f.body[:17]
        index, flags, _t = struct.unpack(">QBQ", prefix)
        final = bool(flags & 1)
        text = old_aead(payload_key).decrypt(nonce(index, final), f.body[17:], AAD_CTX + old_hash + prefix)
        if plaintext is not None:
            text = plaintext(index, text)
        sealed = new_aead(payload_key).encrypt(nonce(index, final), text, AAD_CTX + new_hash + prefix)
        out.append(frame("C", prefix + sealed))
    return b"".join(out)


def output_event(t_us: int, data: bytes) -> bytes:
    return struct.pack(">BQI", 0x01, t_us, len(data)) + data


BLANK = compact({"cols": 80, "rows": 24, "lines": [""] * 24, "cursor": [0, 0], "cursor_hidden": False,
                 "title": ""})


def signature_body(signer: Ed25519PrivateKey, covered: int, final: bool, chunk_hashes: list[bytes],
                   chain: bytes) -> bytes:
    part = struct.pack(">QBI", covered, 1 if final else 0, len(chunk_hashes)) + b"".join(chunk_hashes) + chain
    return part + signer.sign(SIG_CTX + part)


def build(*, version: int, cipher: str, signer: Ed25519PrivateKey, auditor: X25519PublicKey,
          outputs: list[bytes], render: Callable[[dict[str, Any]], bytes] = compact) -> bytes:
    """A whole recording written from FORMAT.md alone, one output event per chunk; `render` turns
    the header object into the header body (to make odd but genuinely signed headers)."""
    file_key, file_id = os.urandom(32), os.urandom(16)
    ephemeral = X25519PrivateKey.generate()
    epk, rpk = raw(ephemeral.public_key()), raw(auditor)
    wrapped = ChaCha20Poly1305(hkdf(ephemeral.exchange(auditor), epk + rpk, WRAP_INFO)).encrypt(
        bytes(12), file_key, file_id)
    aead = AEADS[cipher]
    metadata = aead(hkdf(file_key, file_id, METADATA_INFO)).encrypt(bytes(12), b'{"by":"red team"}', None)
    signer_raw = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    header = {
        "format": "bastion-recording", "version": version, "session_id": "built", "user": "carol",
        "target": "db-9", "kind": "ssh", "start": "2026-12-09T10:00:00.000000Z", "cols": 80, "rows": 24,
        "file_id": base64.b64encode(file_id).decode(), "cipher": cipher,
        "signer": {"type": "ed25519", "key": base64.b64encode(signer_raw).decode()},
        "recipients": [{
            "type": "X25519",
            "fingerprint": "SHA256:" + base64.b64encode(hashlib.sha256(rpk).digest()).decode().rstrip("="),
            "ephemeral": base64.b64encode(epk).decode(),
            "wrapped_key": base64.b64encode(wrapped).decode(),
        }],
        "metadata": base64.b64encode(metadata).decode(),
    }
    preamble = MAGIC + bytes([version])
    header_frame = frame("H", render(header))
    header_hash = digest(version, header_frame)
    chain = digest(version, digest(version, CHAIN_CTX + preamble) + header_hash)
    out = [preamble, header_frame, frame("S", signature_body(signer, 0, False, [], chain))]
    payload = aead(hkdf(file_key, file_id, PAYLOAD_INFO))
    unsigned: list[bytes] = []
    for i, data in enumerate(outputs):
        final = i == len(outputs) - 1
        text = (struct.pack(">BQI", 0x10, 0, len(BLANK)) + BLANK if i == 0 else b"") + output_event(
            i * 1_000_000, data)
        prefix = struct.pack(">QBQ", i, (1 if final else 0) | (2 if i == 0 else 0), i * 1_000_000)
        chunk = frame("C", prefix + payload.encrypt(nonce(i, final), text, AAD_CTX + header_hash + prefix))
        chunk_hash = digest(version, chunk)
        chain = digest(version, chain + chunk_hash)
        unsigned.append(chunk_hash)
        out.append(chunk)
        if len(unsigned) == 8 or final:
            out.append(frame("S", signature_body(signer, i + 1, final, unsigned, chain)))
            unsigned = []
    return b"".join(out)


# -- recordings made by the real writer ----------------------------------------------------------

CHUNKS = 20  # signatures after the header, after chunks 7 and 15, and after the final chunk 19


@dataclass
class Rec:
    path: Path
    data: bytes
    auditor: X25519PrivateKey
    signer: Ed25519PrivateKey
    cipher: str
    lines: list[bytes]  # chunk i holds lines[i]

    @property
    def frames(self) -> list[Frame]:
        return parse(self.data)[1]

    def chunk(self, i: int) -> Frame:
        return [f for f in self.frames if f.kind == "C"][i]

    def frame_index(self, f: Frame) -> int:
        return [g.start for g in self.frames].index(f.start)

    def sig(self, i: int) -> Frame:
        return [f for f in self.frames if f.kind == "S"][i]

    def save(self, data: bytes, name: str = "attacked.rec") -> Path:
        path = self.path.with_name(name)
        path.write_bytes(data)
        return path

    def verify(self, data: bytes) -> VerifyResult:
        return verify_recording(self.save(data), self.signer.public_key())


async def write_rec(directory: Path, session_id: str, cipher: str, *, chunks: int = CHUNKS,
                    auditor: X25519PrivateKey | None = None,
                    signer: Ed25519PrivateKey | None = None) -> Rec:
    auditor = auditor or generate_auditor_key()
    signer = signer or generate_signing_key()
    writer = RecordingWriter(directory, session_id=session_id, user="bob", target="db-1", kind="ssh",
                             recipients=[auditor.public_key()], signing_key=signer,
                             metadata={"command": "cat /etc/shadow"},
                             settings=WriterSettings(fsync=False, cipher=cipher))
    lines = [f"{session_id} chunk {i} secret-{os.urandom(4).hex()}\r\n".encode() for i in range(chunks)]
    async with writer:
        for line in lines[:-1]:
            await writer.output(line)
            await writer.flush()
        await writer.output(lines[-1])
    return Rec(writer.path, writer.path.read_bytes(), auditor, signer, cipher, lines)


@pytest.fixture(params=BOTH)
async def rec(request: pytest.FixtureRequest, tmp_path: Path) -> Rec:
    return await write_rec(tmp_path, "victim", request.param)


@pytest.fixture
async def chacha(tmp_path: Path) -> Rec:
    return await write_rec(tmp_path, "victim-chacha", "chacha20-poly1305")


@pytest.fixture
async def aes(tmp_path: Path) -> Rec:
    return await write_rec(tmp_path, "victim-aes", "aes-256-gcm")


@dataclass
class OldRec:
    """The version 1 fixture made by the version 1 writer."""

    path: Path
    data: bytes
    auditor: X25519PrivateKey
    signer_pub: Any

    def save(self, data: bytes, name: str = "attacked-v1.rec") -> Path:
        path = self.path.with_name(name)
        path.write_bytes(data)
        return path

    def verify(self, data: bytes) -> VerifyResult:
        return verify_recording(self.save(data), self.signer_pub)


@pytest.fixture
def v1(tmp_path: Path) -> OldRec:
    key = tmp_path / "auditor.key"
    key.write_bytes((V1 / "auditor.key").read_bytes())
    key.chmod(0o600)
    path = tmp_path / "v1.rec"
    path.write_bytes((V1 / "v1-fixture.rec").read_bytes())
    return OldRec(path, path.read_bytes(), load_auditor_private_key(key),
                  load_signing_public_key(V1 / "signer.pub"))


@dataclass
class Outcome:
    """What a reader with an auditor key got from a file: the output events it returned as
    authentic, and the error that stopped it (None: it returned everything)."""

    outputs: list[bytes]
    error: CorruptRecording | None
    opened: bool
    cut_off: bool = False


def read_outcome(path: Path, auditor: X25519PrivateKey) -> Outcome:
    try:
        reader = RecordingReader(path, auditor)
    except CorruptRecording as exc:
        return Outcome([], exc, False)
    seen: list[bytes] = []
    with reader:
        try:
            seen.extend(e.data for e in reader if isinstance(e, OutputEvent))
        except CorruptRecording as exc:
            return Outcome(seen, exc, True, reader.cut_off)
        return Outcome(seen, None, True, reader.cut_off)


def assert_refused(path: Path, auditor: X25519PrivateKey, genuine: list[bytes], *,
                   at: int | None = None) -> Outcome:
    """The reader raised CorruptRecording, and every event it returned before that is genuine."""
    got = read_outcome(path, auditor)
    assert got.error is not None, "the reader returned the altered file without complaint"
    assert got.outputs == genuine[: len(got.outputs)]
    if at is not None:
        assert got.error.chunk == at and got.outputs == genuine[:at]
    return got


def assert_tampered(result: VerifyResult, where: str, chunk: int | None, text: str = "") -> None:
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, where, chunk), result
    assert text in result.message


# -- sanity: the independent implementation agrees with the code ------------------------------


@pytest.mark.parametrize("cipher", BOTH)
async def test_v2_files_are_as_format_md_says(tmp_path: Path, cipher: str) -> None:
    """The writer's v2 file decrypts with keys, nonces and a BLAKE3 header hash in the AAD as
    FORMAT.md says, its chain is BLAKE3, and a file built from FORMAT.md alone verifies and reads."""
    rec = await write_rec(tmp_path, "spec", cipher, chunks=10)
    version, frames = parse(rec.data)
    header = json.loads(frames[0].body)
    assert (version, header["version"], header["cipher"]) == (2, 2, cipher)
    same = reseal(rec.data, rec.auditor)  # decrypt and re-encrypt, byte for byte the same
    assert same == rec.data
    chain = digest(2, CHAIN_CTX + rec.data[:8])
    for f in frames:
        if f.kind in "HC":
            chain = digest(2, chain + digest(2, f.raw))
    assert frames[-1].body[-96:-64] == chain
    built = tmp_path / "built.rec"
    auditor, signer = generate_auditor_key(), generate_signing_key()
    built.write_bytes(build(version=2, cipher=cipher, signer=signer, auditor=auditor.public_key(),
                            outputs=[b"one", b"two"] * 6))
    assert verify_recording(built, signer.public_key()).status is VerifyStatus.INTACT
    assert read_outcome(built, auditor) == Outcome([b"one", b"two"] * 6, None, True, False)
    v1_built = tmp_path / "built-v1.rec"
    v1_built.write_bytes(build(version=1, cipher="chacha20-poly1305", signer=signer,
                               auditor=auditor.public_key(), outputs=[b"old"] * 3))
    assert verify_recording(v1_built, signer.public_key()).status is VerifyStatus.INTACT
    assert read_outcome(v1_built, auditor).outputs == [b"old"] * 3


def test_the_v1_fixture_as_format_md_says(v1: OldRec) -> None:
    assert reseal(v1.data, v1.auditor) == v1.data
    assert v1.verify(v1.data).ok


# -- relabelling: versions and ciphers (no key) ------------------------------------------------


def test_v2_preamble_relabelled_v1(rec: Rec) -> None:
    data = bytearray(rec.data)
    data[7] = 1
    assert_tampered(rec.verify(bytes(data)), "header", None, "format version")
    assert_refused(rec.save(bytes(data)), rec.auditor, rec.lines, at=None)


def test_v2_relabelled_v1_in_preamble_and_header(chacha: Rec) -> None:
    """A ChaCha20-Poly1305 v2 file is a well-formed v1 file once both labels say 1: the chain
    (SHA-256 from a v1 preamble) no longer matches what was signed, and the chunks' AAD holds the
    BLAKE3 hash of the old header."""
    data = rewrite_header(chacha.data, edit=lambda h: h.update(version=1), preamble=1)
    assert_tampered(chacha.verify(data), "header", None, "differs from what was signed")
    got = assert_refused(chacha.save(data), chacha.auditor, chacha.lines, at=0)
    assert got.opened  # the header itself is well-formed: chunk 0 is where it stops


def test_aes_v2_relabelled_v1_is_refused_for_its_cipher(aes: Rec) -> None:
    data = rewrite_header(aes.data, edit=lambda h: h.update(version=1), preamble=1)
    assert_tampered(aes.verify(data), "header", None, "cipher")
    got = assert_refused(aes.save(data), aes.auditor, aes.lines)
    assert not got.opened and "cipher" in str(got.error)


def test_v1_relabelled_v2_in_preamble_and_header(v1: OldRec) -> None:
    data = rewrite_header(v1.data, edit=lambda h: h.update(version=2), preamble=2)
    result = v1.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)
    got = read_outcome(v1.save(data), v1.auditor)
    assert got.error is not None and got.outputs == [] and got.error.chunk == 0


@pytest.mark.parametrize("preamble", [1, 2])
def test_v1_header_claiming_aes(v1: OldRec, preamble: int) -> None:
    """A v1 header naming aes-256-gcm is refused (v1 has ChaCha20-Poly1305 only); relabelled to 2
    as well it is well-formed, but its chain and metadata give it away."""
    data = rewrite_header(v1.data, edit=lambda h: h.update(cipher="aes-256-gcm"), preamble=preamble)
    result = v1.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)
    got = read_outcome(v1.save(data), v1.auditor)
    assert got.error is not None and got.outputs == [] and not got.opened
    if preamble == 1:
        assert "cipher" in result.message and "cipher" in str(got.error)


def test_cipher_name_swapped(rec: Rec) -> None:
    data = rewrite_header(rec.data, edit=lambda h: h.update(cipher=OTHER[rec.cipher]))
    assert_tampered(rec.verify(data), "header", None, "differs from what was signed")
    got = assert_refused(rec.save(data), rec.auditor, rec.lines)
    assert not got.opened and "metadata" in str(got.error)


@pytest.mark.parametrize("preamble", [0, 3, 0x7F, 0xFF])
def test_unknown_preamble_versions(rec: Rec, preamble: int) -> None:
    data = bytearray(rec.data)
    data[7] = preamble
    assert_tampered(rec.verify(bytes(data)), "header", None, "format version")
    with pytest.raises(NotARecording):
        RecordingReader(rec.save(bytes(data)), rec.auditor)


def set_or_drop(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A header edit: the key set to `value`, or removed when `value` is "missing"."""
    def edit(h: dict[str, Any]) -> None:
        if value == "missing":
            del h[key]
        else:
            h[key] = value
    return edit


@pytest.mark.parametrize("value", [True, False, 2.0, 1.0, "2", 3, 1, 0, -2, None, 2**64 + 2, [2], {"v": 2},
                                   "missing"], ids=repr)
def test_header_version_values(rec: Rec, value: object) -> None:
    data = rewrite_header(rec.data, edit=set_or_drop("version", value))
    assert_tampered(rec.verify(data), "header", None)
    assert_refused(rec.save(data), rec.auditor, rec.lines)


@pytest.mark.parametrize("preamble,version", [(2, 1), (1, 2)])
def test_header_version_disagrees_with_preamble(chacha: Rec, preamble: int, version: int) -> None:
    data = rewrite_header(chacha.data, edit=lambda h: h.update(version=version), preamble=preamble)
    assert_tampered(chacha.verify(data), "header", None, "format version")
    got = assert_refused(chacha.save(data), chacha.auditor, chacha.lines)
    assert not got.opened and "format version" in str(got.error)


def test_v1_header_version_disagrees_with_preamble(v1: OldRec) -> None:
    data = rewrite_header(v1.data, edit=lambda h: h.update(version=2))
    result = v1.verify(data)
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header")
    assert "format version" in result.message
    with pytest.raises(CorruptRecording, match="format version"):
        RecordingReader(v1.save(data), v1.auditor)


@pytest.mark.parametrize("cipher", ["AES-256-GCM", "aes-128-gcm", "aes-256-gcm ", " chacha20-poly1305",
                                    "chacha20-poly1305\x00", "", None, 1, ["aes-256-gcm"],
                                    {"name": "aes-256-gcm"}, "xchacha20-poly1305", "aes-256-gcm-siv",
                                    "aes-256-ctr", "missing"], ids=repr)
def test_unknown_cipher_strings(rec: Rec, cipher: object) -> None:
    data = rewrite_header(rec.data, edit=set_or_drop("cipher", cipher))
    assert_tampered(rec.verify(data), "header", None, "cipher")
    got = assert_refused(rec.save(data), rec.auditor, rec.lines)
    assert not got.opened and "cipher" in str(got.error)


@pytest.mark.parametrize("first_wins", [True, False])
def test_duplicate_cipher_keys(rec: Rec, first_wins: bool) -> None:
    """`"cipher"` twice: whichever one a parser keeps, the header bytes are not the signed ones."""
    original = parse(rec.data)[1][0].body
    needle = f'"cipher":"{rec.cipher}"'.encode()
    twice = (needle + b"," + needle.replace(rec.cipher.encode(), OTHER[rec.cipher].encode()) if first_wins
             else needle.replace(rec.cipher.encode(), OTHER[rec.cipher].encode()) + b"," + needle)
    data = rewrite_header(rec.data, body=original.replace(needle, twice))
    assert_tampered(rec.verify(data), "header", None)
    assert_refused(rec.save(data), rec.auditor, rec.lines)


@pytest.mark.parametrize("second", [1, 3, 2.0])
def test_duplicate_version_keys(chacha: Rec, second: object) -> None:
    original = parse(chacha.data)[1][0].body
    body = original.replace(b'"version":2,', b'"version":2,"version":' + compact(second) + b",")
    assert body != original
    data = rewrite_header(chacha.data, body=body)
    assert_tampered(chacha.verify(data), "header", None)
    assert_refused(chacha.save(data), chacha.auditor, chacha.lines)


@pytest.mark.parametrize("field,value,why", [
    ("cols", -1, "not between 1 and 65535"), ("rows", 2**63, "not between 1 and 65535"),
    ("cols", 0, "not between 1 and 65535"), ("rows", 10**30, "not between 1 and 65535"),
    ("session_id", "../../etc/passwd", "differs from what was signed"),
    ("user", "x" * 100_000, "differs from what was signed")])
def test_header_fields_with_huge_or_negative_values(rec: Rec, field: str, value: object,
                                                    why: str) -> None:
    data = rewrite_header(rec.data, edit=lambda h: h.update({field: value}))
    assert_tampered(rec.verify(data), "header", None, why)
    if why.startswith("not between"):  # refused when the header is read
        with pytest.raises(CorruptRecording, match=why):
            RecordingReader(rec.save(data), rec.auditor)
    else:
        assert_refused(rec.save(data), rec.auditor, rec.lines, at=0)


def test_header_reformatted_but_equal_as_json(rec: Rec) -> None:
    """Same JSON object, other spacing: readers must accept any formatting but hash the bytes."""
    body = json.dumps(json.loads(parse(rec.data)[1][0].body), indent=1).encode()
    data = rewrite_header(rec.data, body=body)
    assert_tampered(rec.verify(data), "header", None, "differs from what was signed")
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=0)


# -- an auditor with the file key: cipher confusion and re-encrypted content ----------------------


def test_auditor_reencrypts_under_the_other_aead_and_renames_the_cipher(rec: Rec) -> None:
    """Cipher confusion: every chunk and the metadata sealed again under the other AEAD with the
    same derived keys, the header's cipher renamed. The forgery is valid under the file key (the
    reader returns the genuine events), so only the signed chain can catch it, and it does."""
    data = reseal(rec.data, rec.auditor, cipher=OTHER[rec.cipher])
    assert json.loads(parse(data)[1][0].body)["cipher"] == OTHER[rec.cipher]
    assert read_outcome(rec.save(data), rec.auditor) == Outcome(rec.lines, None, True, False)
    assert_tampered(rec.verify(data), "header", None, "the header differs from what was signed")


def test_chunks_under_the_other_aead_with_the_header_unchanged(rec: Rec) -> None:
    forged = reseal(rec.data, rec.auditor, cipher=OTHER[rec.cipher])
    header = parse(rec.data)[1][0]
    # The original header (cipher name, metadata) with the other AEAD's chunks.
    frames = parse(forged)[1]
    data = rec.data[:8] + header.raw + b"".join(f.raw for f in frames[1:])
    assert_tampered(rec.verify(data), "chunk 0", 0, "differ from what was signed")
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=0)


def test_auditor_downgrades_v2_to_v1(chacha: Rec) -> None:
    data = reseal(chacha.data, chacha.auditor, version=1)
    assert data[7] == 1 and json.loads(parse(data)[1][0].body)["version"] == 1
    assert read_outcome(chacha.save(data), chacha.auditor).outputs == chacha.lines  # valid under the key
    assert_tampered(chacha.verify(data), "header", None, "the header differs from what was signed")


def test_auditor_downgrades_aes_v2_to_v1_with_chacha(aes: Rec) -> None:
    data = reseal(aes.data, aes.auditor, version=1, cipher="chacha20-poly1305")
    assert read_outcome(aes.save(data), aes.auditor).outputs == aes.lines
    assert_tampered(aes.verify(data), "header", None, "the header differs from what was signed")


@pytest.mark.parametrize("cipher", BOTH)
def test_auditor_upgrades_the_v1_fixture_to_v2(v1: OldRec, cipher: str) -> None:
    data = reseal(v1.data, v1.auditor, version=2, cipher=cipher)
    assert read_outcome(v1.save(data), v1.auditor).error is None
    result = v1.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)


def test_auditor_v1_header_with_aes_chunks(v1: OldRec) -> None:
    """A v1 file whose chunks and metadata the auditor re-sealed with AES-256-GCM, still labelled 1."""
    data = reseal(v1.data, v1.auditor, cipher="aes-256-gcm")
    result = v1.verify(data)
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header") and "cipher" in result.message
    with pytest.raises(CorruptRecording, match="cipher"):
        RecordingReader(v1.save(data), v1.auditor)


@pytest.mark.parametrize("target", [0, 3, 7, 8, 19])
def test_auditor_alters_a_chunk(rec: Rec, target: int) -> None:
    def alter(index: int, text: bytes) -> bytes:
        return text.replace(b"secret-", b"benign-") if index == target else text

    data = reseal(rec.data, rec.auditor, plaintext=alter)
    forged = read_outcome(rec.save(data), rec.auditor)
    assert forged.error is None and forged.outputs[target] != rec.lines[target]  # valid under the key
    result = rec.verify(data)
    assert_tampered(result, f"chunk {target}", target, "differ from what was signed")
    assert result.signed_chunks == target // 8 * 8


def test_auditor_alters_a_v1_chunk(v1: OldRec) -> None:
    def alter(index: int, text: bytes) -> bytes:
        if index != 2:
            return text
        assert b"bold" in text
        return text.replace(b"bold", b"BOLD")

    data = reseal(v1.data, v1.auditor, plaintext=alter)
    assert data != v1.data and read_outcome(v1.save(data), v1.auditor).error is None
    result = v1.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "chunk 2", 2)


def test_auditor_changes_the_metadata_command(rec: Rec) -> None:
    """The command is in the encrypted metadata: re-sealed by an auditor, the header changes."""
    header = json.loads(parse(rec.data)[1][0].body)
    file_key, file_id = unwrap(header, rec.auditor), base64.b64decode(header["file_id"])
    aead = AEADS[rec.cipher](hkdf(file_key, file_id, METADATA_INFO))
    meta = json.loads(aead.decrypt(bytes(12), base64.b64decode(header["metadata"]), None))
    assert meta["command"] == "cat /etc/shadow"
    meta["command"] = "true"
    sealed = base64.b64encode(aead.encrypt(bytes(12), compact(meta), None)).decode()
    data = reseal(rec.data, rec.auditor, edit=lambda h: h.update(metadata=sealed))
    with RecordingReader(rec.save(data), rec.auditor) as reader:
        assert reader.header.metadata == {"command": "true"}  # valid under the key
    assert_tampered(rec.verify(data), "header", None, "differs from what was signed")


# -- splicing between files -------------------------------------------------------------------


async def two_files(tmp_path: Path, prefix: str, second_cipher: str) -> tuple[Rec, Rec]:
    """Two v2 recordings by the same bastion key for the same auditor, the first AES-256-GCM."""
    auditor, signer = generate_auditor_key(), generate_signing_key()
    a = await write_rec(tmp_path, f"{prefix}-a", "aes-256-gcm", auditor=auditor, signer=signer)
    b = await write_rec(tmp_path, f"{prefix}-b", second_cipher, auditor=auditor, signer=signer)
    return a, b


@pytest.fixture
async def pair(tmp_path: Path) -> tuple[Rec, Rec]:
    """One per cipher."""
    return await two_files(tmp_path, "file", "chacha20-poly1305")


@pytest.fixture
async def same_cipher_pair(tmp_path: Path) -> tuple[Rec, Rec]:
    return await two_files(tmp_path, "twin", "aes-256-gcm")


@pytest.mark.parametrize("k", [0, 4, 8, 19])
@pytest.mark.parametrize("pairing", ["same cipher", "other cipher"])
def test_chunk_spliced_from_another_v2_file(pair: tuple[Rec, Rec], same_cipher_pair: tuple[Rec, Rec],
                                            k: int, pairing: str) -> None:
    a, b = same_cipher_pair if pairing == "same cipher" else pair
    data = splice(a.data, a.frames, a.frame_index(a.chunk(k)), b.chunk(k).raw)
    assert_tampered(a.verify(data), f"chunk {k}", k, "differ from what was signed")
    assert_refused(a.save(data), a.auditor, a.lines, at=k)


@pytest.mark.parametrize("which", [1, 2, 3])
def test_chunk_signature_frame_spliced_from_another_file(same_cipher_pair: tuple[Rec, Rec],
                                                         which: int) -> None:
    """A genuine signature by the same bastion key, from another recording, in the same place."""
    a, b = same_cipher_pair
    data = splice(a.data, a.frames, a.frame_index(a.sig(which)), b.sig(which).raw)
    first = (which - 1) * 8
    assert_tampered(a.verify(data), f"chunk {first}", first, "differ from what was signed")


def test_header_signature_spliced_from_another_file(same_cipher_pair: tuple[Rec, Rec]) -> None:
    a, b = same_cipher_pair
    data = splice(a.data, a.frames, 1, b.sig(0).raw)
    assert_tampered(a.verify(data), "header", None, "differs from what was signed")


def test_everything_after_the_header_spliced_from_another_file(same_cipher_pair: tuple[Rec, Rec]) -> None:
    """Another recording's chunks and genuine signatures under this file's header: the chain
    starts from the header, so the first chunk signature does not match."""
    a, b = same_cipher_pair
    data = a.data[: a.sig(0).end] + b.data[b.sig(0).end :]
    assert_tampered(a.verify(data), "header", None, "differs from what was signed")
    assert_refused(a.save(data), a.auditor, a.lines, at=0)
    data = a.data[: a.frames[0].end] + b.data[b.frames[0].end :]  # the header's signature from B too
    assert_tampered(a.verify(data), "header", None, "differs from what was signed")


def test_header_spliced_onto_another_files_chunks(same_cipher_pair: tuple[Rec, Rec]) -> None:
    """B's header and header signature over A's chunks and signatures."""
    a, b = same_cipher_pair
    data = b.data[: b.sig(0).end] + a.data[a.sig(0).end :]
    result = verify_recording(a.save(data), a.signer.public_key())
    assert result.status is VerifyStatus.TAMPERED and result.where == "header"
    assert_refused(a.save(data), a.auditor, [], at=0)


def test_final_signature_spliced_from_another_file(same_cipher_pair: tuple[Rec, Rec]) -> None:
    a, b = same_cipher_pair
    data = a.data[: a.sig(3).start] + b.sig(3).raw
    assert_tampered(a.verify(data), "chunk 16", 16, "differ from what was signed")


@pytest.mark.parametrize("cipher", BOTH)
async def test_splices_between_v1_and_v2_files_by_the_same_bastion_key(tmp_path: Path, cipher: str) -> None:
    """A bastion upgraded from format 1 to 2 keeps its signing key: its old and new files' chunks
    and signature frames (same signature context "v1" in both) must not mix."""
    auditor, signer = generate_auditor_key(), generate_signing_key()
    old = build(version=1, cipher="chacha20-poly1305", signer=signer, auditor=auditor.public_key(),
                outputs=[f"old {i}".encode() for i in range(20)])
    new = await write_rec(tmp_path, "upgraded", cipher, auditor=auditor, signer=signer)
    old_frames = parse(old)[1]
    old_sigs = [f for f in old_frames if f.kind == "S"]
    old_chunks = [f for f in old_frames if f.kind == "C"]
    # The v1 file's header signature, then its chunk signatures, in the v2 file.
    data = splice(new.data, new.frames, 1, old_sigs[0].raw)
    assert_tampered(new.verify(data), "header", None, "differs from what was signed")
    data = splice(new.data, new.frames, new.frame_index(new.sig(1)), old_sigs[1].raw)
    assert_tampered(new.verify(data), "chunk 0", 0, "differ from what was signed")
    # Chunks across versions, both ways.
    data = splice(new.data, new.frames, new.frame_index(new.chunk(5)), old_chunks[5].raw)
    assert_tampered(new.verify(data), "chunk 5", 5)
    assert_refused(new.save(data), new.auditor, new.lines, at=5)
    data = splice(old, old_frames, [f.start for f in old_frames].index(old_chunks[5].start), new.chunk(5).raw)
    assert_tampered(new.verify(data), "chunk 5", 5)
    # Everything after the v1 header replaced with the v2 file's.
    data = old[: old_frames[0].end] + new.data[new.frames[0].end :]
    assert new.verify(data).status is VerifyStatus.TAMPERED
    assert_refused(new.save(data), new.auditor, [], at=0)


def test_splices_between_the_v1_fixture_and_a_v2_file(v1: OldRec, rec: Rec) -> None:
    _, old_frames = parse(v1.data)
    old_chunks = [f for f in old_frames if f.kind == "C"]
    data = splice(rec.data, rec.frames, rec.frame_index(rec.chunk(1)), old_chunks[1].raw)
    assert_tampered(rec.verify(data), "chunk 1", 1)
    data = splice(rec.data, rec.frames, rec.frame_index(rec.sig(1)), old_frames[4].raw)  # v1 signature
    assert_tampered(rec.verify(data), "signature after chunk 7", 0, "not valid for the signer")
    data = splice(v1.data, old_frames, 2, rec.chunk(0).raw)
    result = v1.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "chunk 0", 0)
    assert read_outcome(v1.save(data), v1.auditor).outputs == []


# -- truncation --------------------------------------------------------------------------------


def full_events(path: Path, auditor: X25519PrivateKey) -> list[list[Event]]:
    with RecordingReader(path, auditor) as reader:
        return [[e for e in reader.read_chunk(c.index) if not isinstance(e, KeyframeEvent)]
                for c in reader.chunks]


def check_every_truncation(path: Path, data: bytes, auditor: X25519PrivateKey, signer: Any) -> None:
    """Cut the file at every byte: the verdict is CUT_OFF after the last complete chunk with the
    right number signed, and the reader returns exactly the complete chunks' events."""
    _, frames = parse(data)
    per_chunk = full_events(path, auditor)
    cut = path.with_name("cut.rec")
    for size in range(len(data) + 1):
        cut.write_bytes(data[:size])
        result = verify_recording(cut, signer)
        done = [f for f in frames if f.end <= size]
        chunks = sum(f.kind == "C" for f in done)
        signed = max([f.covered for f in done if f.kind == "S"], default=0)
        if size == len(data):
            assert result.status is VerifyStatus.INTACT
            continue
        assert result.status is VerifyStatus.CUT_OFF, (size, result)
        assert (result.chunks, result.signed_chunks) == (chunks, signed), (size, result)
        assert result.chunk == (chunks - 1 if chunks else None), (size, result)
        assert result.where == (f"chunk {chunks - 1}" if chunks else "header"), (size, result)
        if size < 8:
            with pytest.raises(NotARecording):
                RecordingReader(cut, auditor)
            continue
        if size < frames[0].end:
            with pytest.raises(CorruptRecording, match="cut off"):
                RecordingReader(cut, auditor)
            continue
        with RecordingReader(cut, auditor) as reader:
            events = list(reader)
            final_in = chunks == len(per_chunk)
            assert reader.cut_off is not final_in and reader.problem is None, size
            assert reader.last_chunk == (chunks - 1 if chunks else None)
        assert events == [e for c in per_chunk[:chunks] for e in c], size


async def test_truncation_at_every_byte_of_a_v2_file(tmp_path: Path) -> None:
    for cipher in BOTH:
        rec = await write_rec(tmp_path, f"cut-{cipher}", cipher, chunks=10)
        check_every_truncation(rec.path, rec.data, rec.auditor, rec.signer.public_key())


def test_truncation_at_every_byte_of_the_v1_fixture(v1: OldRec) -> None:
    check_every_truncation(v1.path, v1.data, v1.auditor, v1.signer_pub)


@pytest.mark.parametrize("k", [0, 5, 12])
def test_a_frame_length_inflated_past_the_end_with_a_valid_crc(rec: Rec, k: int) -> None:
    """Anyone can recompute the CRC: a chunk's length pointing past the end of the file looks
    like a cut at that chunk (the same as truncating there), never like an intact file, and
    nothing from the hidden part is returned."""
    f = rec.chunk(k)
    data = splice(rec.data, rec.frames, rec.frame_index(f), frame("C", f.body, len(rec.data)))
    result = rec.verify(data)
    assert result.status is VerifyStatus.CUT_OFF
    assert (result.chunks, result.signed_chunks) == (k, k // 8 * 8)
    got = read_outcome(rec.save(data), rec.auditor)
    assert got == Outcome(rec.lines[:k], None, True, True)


def test_a_frame_length_changed_without_the_crc_is_damage(rec: Rec) -> None:
    f = rec.chunk(5)
    data = bytearray(rec.data)
    data[f.start + 4] ^= 0x40
    assert_tampered(rec.verify(bytes(data)), "frame after chunk 4", 5, "damaged frame header")
    assert_refused(rec.save(bytes(data)), rec.auditor, rec.lines, at=5)


def test_a_frame_length_shrunk_with_a_valid_crc(rec: Rec) -> None:
    f = rec.chunk(5)
    data = splice(rec.data, rec.frames, rec.frame_index(f), frame("C", f.body, len(f.body) - 1))
    result = rec.verify(data)
    # Chunk 5 still parses (one byte short); the frames after it are out of step: reported at the
    # frame after it, nothing from chunk 5 on is vouched for.
    assert_tampered(result, "frame after chunk 5", 6, "damaged frame header")
    assert result.signed_chunks == 0
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=5)


# -- huge values in frames ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 2**32 - 1])
def test_oversized_frame_lengths_with_a_valid_crc(rec: Rec, length: int) -> None:
    f = rec.chunk(3)
    data = splice(rec.data, rec.frames, rec.frame_index(f), frame("C", f.body, length))
    assert_tampered(rec.verify(data), "frame after chunk 2", 3, "damaged frame header")
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=3)


@pytest.mark.parametrize("length", [MAX_HEADER + 1, MAX_FRAME, 2**32 - 1])
def test_oversized_header_length_with_a_valid_crc(rec: Rec, length: int) -> None:
    header = rec.frames[0]
    data = splice(rec.data, rec.frames, 0, frame("H", header.body, length))
    result = rec.verify(data)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)
    with pytest.raises(CorruptRecording):
        RecordingReader(rec.save(data), rec.auditor)


def with_field(rec: Rec, f: Frame, layout: str, names: tuple[str, ...], field: str,
               value: int) -> bytes:
    """The file with one field of frame `f`'s fixed start (struct `layout`) set to `value`."""
    size = struct.calcsize(layout)
    values = dict(zip(names, struct.unpack(layout, f.body[:size]), strict=True)) | {field: value}
    body = struct.pack(layout, *(values[n] for n in names)) + f.body[size:]
    return splice(rec.data, rec.frames, rec.frame_index(f), frame(f.kind, body))


@pytest.mark.parametrize("field,value", [("index", 2**64 - 1), ("t_us", 2**64 - 1), ("flags", 0xFF)])
def test_huge_chunk_prefix_values(rec: Rec, field: str, value: int) -> None:
    data = with_field(rec, rec.chunk(4), ">QBQ", ("index", "flags", "t_us"), field, value)
    assert_tampered(rec.verify(data), "chunk 4", 4)
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=4)


@pytest.mark.parametrize("field,value", [("covered", 2**64 - 1), ("count", 2**32 - 1), ("final", 2)])
def test_huge_signature_fields(rec: Rec, field: str, value: int) -> None:
    data = with_field(rec, rec.sig(1), ">QBI", ("covered", "final", "count"), field, value)
    assert_tampered(rec.verify(data), "signature after chunk 7", 0)
    # The reader does not use signature frames: the content it returns is still the genuine one.
    assert read_outcome(rec.save(data), rec.auditor) == Outcome(rec.lines, None, True, False)


def huge_int_header(rec: Rec) -> bytes:
    return rewrite_header(rec.data, body=parse(rec.data)[1][0].body.replace(
        b'"cols":80', b'"cols":' + b"9" * 5000))


def nested_header(rec: Rec) -> bytes:
    return rewrite_header(rec.data, body=parse(rec.data)[1][0].body.replace(
        b'"user":"bob"', b'"user":' + b"[" * 5000 + b"]" * 5000))


@pytest.mark.parametrize("api", ["RecordingReader", "read_header_unencrypted"])
@pytest.mark.parametrize("make", [huge_int_header, nested_header], ids=["5000 digits", "5000 deep"])
def test_reader_refuses_a_header_the_json_parser_chokes_on(rec: Rec, api: str,
                                                          make: Callable[[Rec], bytes]) -> None:
    path = rec.save(make(rec))
    with pytest.raises(CorruptRecording):
        if api == "RecordingReader":
            RecordingReader(path, rec.auditor)
        else:
            read_header_unencrypted(path)


def test_verify_gives_a_verdict_for_a_header_with_a_5000_digit_integer(rec: Rec) -> None:
    assert_tampered(rec.verify(huge_int_header(rec)), "header", None, "header is invalid")


def test_verify_gives_a_verdict_for_a_deeply_nested_header(rec: Rec) -> None:
    assert_tampered(rec.verify(nested_header(rec)), "header", None)


# -- the signature frame after the header -----------------------------------------------------


@pytest.mark.parametrize("edit", ["dropped", "duplicated"])
def test_the_header_signature_frame_cannot_be_dropped_or_duplicated(rec: Rec, edit: str) -> None:
    s0 = rec.sig(0)
    if edit == "dropped":
        data = rec.data[: s0.start] + rec.data[s0.end :]
    else:
        data = rec.data[: s0.end] + s0.raw + rec.data[s0.end :]
    assert rec.verify(data).status is VerifyStatus.TAMPERED


def cut_before_the_first_chunk_signature(rec: Rec, *, keep_s0: bool, edit: str) -> bytes:
    """The writer stopped after chunk 5 (no chunk signature yet); then the header was edited."""
    data = rec.data[: rec.chunk(5).end]
    if edit == "user":
        data = rewrite_header(data, edit=lambda h: h.update(user="mallory", target="nothing-to-see"))
    elif edit == "relabel-v1":
        data = rewrite_header(data, edit=lambda h: h.update(version=1), preamble=1)
    else:
        data = rewrite_header(data, edit=lambda h: h.update(cipher=OTHER[rec.cipher]))
    if not keep_s0:
        s0 = parse(data)[1][1]
        assert s0.kind == "S" and s0.covered == 0
        data = data[: s0.start] + data[s0.end :]
    return data


EDITS = ["user", "relabel-v1", "cipher"]


@pytest.mark.parametrize("edit", EDITS)
def test_cut_off_file_with_an_edited_header_keeps_its_header_signature(chacha: Rec, edit: str) -> None:
    data = cut_before_the_first_chunk_signature(chacha, keep_s0=True, edit=edit)
    assert_tampered(chacha.verify(data), "header", None, "differs from what was signed")


@pytest.mark.parametrize("keep_s0", [True, False])
@pytest.mark.parametrize("edit", EDITS)
def test_cut_off_file_with_an_edited_header_is_refused_by_the_reader(chacha: Rec, edit: str,
                                                                     keep_s0: bool) -> None:
    """Whatever the verifier says, the reader binds each chunk to the header (AAD) or the
    metadata to the cipher: it returns nothing from an edited header's chunks."""
    data = cut_before_the_first_chunk_signature(chacha, keep_s0=keep_s0, edit=edit)
    got = assert_refused(chacha.save(data), chacha.auditor, chacha.lines)
    assert got.outputs == []


@pytest.mark.parametrize("edit", EDITS)
def test_cut_off_file_with_an_edited_header_and_no_header_signature(chacha: Rec, edit: str) -> None:
    data = cut_before_the_first_chunk_signature(chacha, keep_s0=False, edit=edit)
    result = chacha.verify(data)
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header"), result


# -- the reader's seek without decryption ----------------------------------------------------------


def clear_keyframe_flags(rec: Rec) -> bytes:
    data = rec.data
    for i in range(CHUNKS):
        f = parse(data)[1][rec.frame_index(rec.chunk(i))]
        body = bytearray(f.body)
        body[8] &= ~0x02
        data = data[: f.start] + frame("C", bytes(body)) + data[f.end :]
    return data


def test_cleared_keyframe_flags_are_caught_by_verify_and_iteration(rec: Rec) -> None:
    data = clear_keyframe_flags(rec)
    assert_tampered(rec.verify(data), "chunk 0", 0)
    assert_refused(rec.save(data), rec.auditor, rec.lines, at=0)


def test_cleared_keyframe_flags_do_not_blank_the_screen(rec: Rec) -> None:
    with RecordingReader(rec.save(clear_keyframe_flags(rec)), rec.auditor) as reader:
        assert len(reader.chunks) == CHUNKS
        with pytest.raises(CorruptRecording):
            reader.screen_at(reader.duration)


def test_huge_header_rows_in_a_chunkless_file(rec: Rec) -> None:
    """An edited header (no key needed; a chunkless file has nothing else binding the header for
    the reader) with rows 2**62 once made seek(0) build ('',) * rows: now the header is refused,
    and a size the writer allows but the emulator does not is clamped."""
    data = rewrite_header(rec.data[: rec.sig(0).end], edit=lambda h: h.update(rows=2**62))
    assert rec.verify(data).status is VerifyStatus.TAMPERED  # the header signature catches it
    with pytest.raises(CorruptRecording, match="rows"):
        RecordingReader(rec.save(data), rec.auditor)
    tall = rewrite_header(rec.data[: rec.sig(0).end], edit=lambda h: h.update(rows=60_000))
    with RecordingReader(rec.save(tall), rec.auditor) as reader:
        assert len(reader.seek(0.0).keyframe.lines) <= MAX_ROWS


# -- signed by the bastion key, yet not as FORMAT.md says -------------------------------------------


def _float_version(h: dict[str, Any]) -> bytes:
    return compact(h).replace(b'"version":2,', b'"version":2.0,')


def _duplicate_cipher(h: dict[str, Any]) -> bytes:
    # An independent parser keeping the first value sees ChaCha20-Poly1305, this one AES-256-GCM.
    return compact(h).replace(b'"cipher":"aes-256-gcm"',
                              b'"cipher":"chacha20-poly1305","cipher":"aes-256-gcm"')


def _utf16(h: dict[str, Any]) -> bytes:
    return json.dumps(h, separators=(",", ":")).encode("utf-16")


@pytest.mark.parametrize("render", [
    pytest.param(_float_version, id="version 2.0"),
    pytest.param(_duplicate_cipher, id="cipher twice"),
    pytest.param(_utf16, id="utf-16"),
])
def test_signed_headers_that_format_md_does_not_allow(tmp_path: Path,
                                                      render: Callable[[dict[str, Any]], bytes]) -> None:
    auditor, signer = generate_auditor_key(), generate_signing_key()
    path = tmp_path / "odd.rec"
    path.write_bytes(build(version=2, cipher="aes-256-gcm", signer=signer, auditor=auditor.public_key(),
                           outputs=[b"x"] * 3, render=render))
    result = verify_recording(path, signer.public_key())
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header"), result
    with pytest.raises(CorruptRecording):
        RecordingReader(path, auditor)


# -- the writer's cipher choice ------------------------------------------------------------------------


def test_writer_refuses_an_unknown_cipher_and_leaves_no_file(tmp_path: Path) -> None:
    # (An empty name means "choose for me", like None: `settings.cipher or preferred_cipher()`.)
    for name in ["aes-128-gcm", "AES-256-GCM", "none", "chacha20-poly1305 ", "xchacha20-poly1305"]:
        with pytest.raises(ValueError, match="unknown recording cipher"):
            RecordingWriter(tmp_path, session_id="bad-cipher", user="u", target="t", kind="ssh",
                            recipients=[generate_auditor_key().public_key()],
                            signing_key=generate_signing_key(),
                            settings=WriterSettings(fsync=False, cipher=name))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,expected", [
    ("processor\t: 0\nflags\t\t: fpu vme sse2 aes avx\n", True),
    ("processor\t: 0\nflags\t\t: fpu vme sse2 vaes avx\n", False),  # vaes alone is not aes
    ("processor\t: 0\nflags\t\t: fpu aesni\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n", True),
    ("processor\t: 0\nbugs\t\t: aes\nflags\t\t: fpu\n", False),
    ("", False),
])
def test_aes_detection_from_cpuinfo(tmp_path: Path, text: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert _has_aes_instructions(str(cpuinfo)) is expected
    assert _has_aes_instructions(str(tmp_path / "missing")) is False


# ================================================================================================
# bastion/ssh/gcm.py against asyncssh's own GCMCipher and GCMEncryption
# ================================================================================================

TAG = 16


def theirs_open(cipher: GCMCipher, header: bytes, body: bytes) -> bytes | None:
    """asyncssh's cipher given the same bytes as PacketGCM.open (ciphertext, then the tag)."""
    return cipher.verify_and_decrypt(header, body[:-TAG] if len(body) >= TAG else b"", body[-TAG:])


def independent_nonce(iv: bytes, n: int) -> bytes:
    """RFC 5647: a fixed 4-byte field and a 64-bit invocation counter, n packets after the IV's."""
    return iv[:4] + ((int.from_bytes(iv[4:], "big") + n) % 2**64).to_bytes(8, "big")


@pytest.mark.parametrize("size", [16, 32])
def test_a_long_stream_uses_successive_nonces_as_asyncssh_does(size: int) -> None:
    rng = random.Random(size)
    key = rng.randbytes(size)
    iv = rng.randbytes(4) + (2**64 - 700).to_bytes(8, "big")  # wraps in the middle of the stream
    name = f"aes{size * 8}-gcm"
    theirs, ours, opener = GCMCipher(name, key, iv), gcm.PacketGCM(key, iv), gcm.PacketGCM(key, iv)
    reference = AESGCM(key)
    for n in range(2000):
        data = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 255, 4096, 35000]))
        header = struct.pack(">I", len(data))
        sealed, tag = theirs.encrypt_and_sign(header, data)
        mine = ours.seal(header, data)
        assert mine == sealed + tag
        assert reference.decrypt(independent_nonce(iv, n), mine[4:], header) == data
        assert opener.open(header, mine[4:]) == data


def test_the_counter_wrap_does_not_carry_into_the_fixed_field() -> None:
    key, fixed = os.urandom(32), b"\x00\x00\x00\x07"
    iv = fixed + b"\xff" * 8
    ours, opener, theirs = gcm.PacketGCM(key, iv), gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    header = b"\x00\x00\x00\x20"
    sealed = [ours.seal(header, bytes([i]) * 32) for i in range(3)]
    expected_nonces = [fixed + b"\xff" * 8, fixed + bytes(8), fixed + bytes(7) + b"\x01"]
    for i, (packet, n) in enumerate(zip(sealed, expected_nonces, strict=True)):
        assert AESGCM(key).decrypt(n, packet[4:], header) == bytes([i]) * 32
        with pytest.raises(InvalidTag):  # not with the carry into the fixed field
            AESGCM(key).decrypt(b"\x00\x00\x00\x08" + n[4:], packet[4:], header)
        assert opener.open(header, packet[4:]) == bytes([i]) * 32
        assert theirs_open(theirs, header, packet[4:]) == bytes([i]) * 32


ATTACKS = st.sampled_from(["none", "flip", "truncate tag", "extend tag", "header", "replay", "drop",
                           "empty", "swap with next"])


@settings(max_examples=150, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=12, max_size=12),
       packets=st.lists(st.tuples(st.binary(max_size=300), ATTACKS), min_size=1, max_size=12),
       near_wrap=st.booleans())
def test_opening_after_failures_is_the_same_as_asyncssh(key: bytes, iv: bytes,
                                                        packets: list[tuple[bytes, str]],
                                                        near_wrap: bool) -> None:
    """A stream with forged, truncated, replayed, dropped and swapped packets: PacketGCM.open and
    asyncssh's verify_and_decrypt give the same result for every packet, i.e. a failed open also
    advances the counter (asyncssh ends the connection on the first failure anyway)."""
    if near_wrap:
        iv = iv[:4] + (2**64 - 3).to_bytes(8, "big")
    sealer = gcm.PacketGCM(key, iv)
    wire = [(struct.pack(">I", len(d)), sealer.seal(struct.pack(">I", len(d)), d)[4:]) for d, _ in packets]
    ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes128-gcm", key, iv)
    position = 0  # packets offered to the opener so far: the counter it opens the next one with
    for i, ((data, attack), (header, body)) in enumerate(zip(packets, wire, strict=True)):
        if attack == "drop":
            continue  # never offered to the opener
        if attack == "flip" and body:
            pos = len(data) % len(body)
            body = body[:pos] + bytes([body[pos] ^ 0x80]) + body[pos + 1 :]
        elif attack == "truncate tag":
            body = body[: -1 - len(data) % TAG]
        elif attack == "extend tag":
            body = body + b"\x00"
        elif attack == "header":
            header = struct.pack(">I", len(data) ^ 1)
        elif attack == "replay" and i > 0:
            header, body = wire[i - 1]
        elif attack == "empty":
            body = b""
        elif attack == "swap with next" and i + 1 < len(wire):
            header, body = wire[i + 1]
        mine, asyncssh_s = ours.open(header, body), theirs_open(theirs, header, body)
        assert mine == asyncssh_s
        # Only the unchanged packet sealed with the opener's current counter opens.
        expected = packets[position][0] if position < len(wire) and (header, body) == wire[position] else None
        assert mine == expected
        position += 1


def test_after_a_failed_open_the_next_genuine_packet_opens_in_both() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sealer = gcm.PacketGCM(key, iv)
    header = b"\x00\x00\x00\x10"
    first, second = sealer.seal(header, b"A" * 16)[4:], sealer.seal(header, b"B" * 16)[4:]
    ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    forged = first[:-1] + bytes([first[-1] ^ 1])
    assert ours.open(header, forged) is None and theirs_open(theirs, header, forged) is None
    # The counter moved on: the genuine first packet no longer opens, the second one does.
    assert ours.open(header, first) is None and theirs_open(theirs, header, first) is None
    ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    assert ours.open(header, forged) is None and theirs_open(theirs, header, forged) is None
    assert ours.open(header, second) == b"B" * 16 == theirs_open(theirs, header, second)


@pytest.mark.parametrize("cut", range(1, TAG + 1))
def test_every_tag_truncation_fails_in_both(cut: int) -> None:
    key, iv = os.urandom(16), os.urandom(12)
    header = b"\x00\x00\x00\x30"
    body = gcm.PacketGCM(key, iv).seal(header, b"p" * 48)[4:]
    ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes128-gcm", key, iv)
    assert ours.open(header, body[:-cut]) is None
    assert theirs_open(theirs, header, body[:-cut]) is None
    # A tag too short to hold anything (under 16 bytes in all) is refused, not raised on.
    assert gcm.PacketGCM(key, iv).open(header, body[-TAG:][:-cut]) is None


def test_every_length_header_change_fails_in_both() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    header = b"\x00\x00\x01\x00"
    body = gcm.PacketGCM(key, iv).seal(header, b"q" * 256)[4:]
    forged_headers = [(int.from_bytes(header, "big") ^ (1 << bit)).to_bytes(4, "big") for bit in range(32)]
    forged_headers += [b"", header[:3], header + b"\x00", b"\x00" + header, header * 2]
    for forged in forged_headers:
        ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
        assert ours.open(forged, body) is None
        assert theirs_open(theirs, forged, body) is None
    assert gcm.PacketGCM(key, iv).open(header, body) == b"q" * 256


def test_empty_packets_are_the_same_as_asyncssh() -> None:
    """An empty plaintext seals to the header and a bare tag and opens to b'' in both (asyncssh's
    connection treats a falsy result as a MAC failure, so both shims end the connection alike)."""
    key, iv = os.urandom(32), os.urandom(12)
    header = b"\x00\x00\x00\x00"
    ours, theirs = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    sealed = ours.seal(header, b"")
    assert sealed == b"".join(theirs.encrypt_and_sign(header, b"")) and len(sealed) == 4 + TAG
    opener, their_opener = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    assert opener.open(header, sealed[4:]) == b"" == theirs_open(their_opener, header, sealed[4:])
    forged = sealed[4:-1] + bytes([sealed[-1] ^ 1])
    opener, their_opener = gcm.PacketGCM(key, iv), GCMCipher("aes256-gcm", key, iv)
    assert opener.open(header, forged) is None and theirs_open(their_opener, header, forged) is None
    gcm.install()
    # As asyncssh's connection frames a packet of length 0 (block 16, mac 16: rem = 4, so
    # rest = inpbuf[:-12] and mac = inpbuf[-12:4] of the 4 bytes after the first block).
    after_first = sealed[16:]
    first, rest, mac = sealed[:16], after_first[: 4 - TAG], after_first[4 - TAG : 4]
    for encryption in (asyncssh.encryption.get_encryption(b"aes256-gcm@openssh.com", key, iv),
                       GCMEncryption.new("aes256-gcm", key, iv)):
        assert encryption.decrypt_packet(0, first, rest, 4, mac) == b""


@pytest.mark.parametrize("algorithm,name,size", [(b"aes128-gcm@openssh.com", "aes128-gcm", 16),
                                                 (b"aes256-gcm@openssh.com", "aes256-gcm", 32)])
def test_the_installed_shim_gives_the_same_wire_bytes_and_results_as_asyncssh_s(
        algorithm: bytes, name: str, size: int) -> None:
    """Through asyncssh.encryption.get_encryption, as the connection uses it: the same bytes on
    the wire (packet + mac) for any sequence number, the same header split, the same opens,
    also after a forged packet."""
    gcm.install()
    rng = random.Random(size)
    key, iv = rng.randbytes(size), rng.randbytes(12)
    ours_send = asyncssh.encryption.get_encryption(algorithm, key, iv)
    ours_recv = asyncssh.encryption.get_encryption(algorithm, key, iv)
    assert type(ours_send).__name__ == "_PacketGCMEncryption"
    theirs_send, theirs_recv = GCMEncryption.new(name, key, iv), GCMEncryption.new(name, key, iv)
    for n in range(300):
        packet = rng.randbytes(16 * rng.randint(1, 40))
        header = struct.pack(">I", len(packet))
        seq = rng.randrange(2**32)
        mine, mac = ours_send.encrypt_packet(seq, header, packet)
        their_packet, their_mac = theirs_send.encrypt_packet(rng.randrange(2**32), header, packet)
        wire = mine + mac
        assert wire == their_packet + their_mac
        first, rest, tag = wire[:16], wire[16:-TAG], wire[-TAG:]
        if n % 37 == 5:
            rest = rest[:-1] + bytes([rest[-1] ^ 1]) if rest else rest
            first = first if rest else first[:-1] + bytes([first[-1] ^ 1])
        assert ours_recv.decrypt_header(seq, first, 4) == theirs_recv.decrypt_header(seq, first, 4)
        got = ours_recv.decrypt_packet(seq, first, rest, 4, tag)
        assert got == theirs_recv.decrypt_packet(seq, first, rest, 4, tag)
        assert got == (None if n % 37 == 5 else packet)


@pytest.mark.parametrize("algorithm,key_size", [
    (b"aes128-gcm@openssh.com", 0), (b"aes128-gcm@openssh.com", 15), (b"aes128-gcm@openssh.com", 17),
    (b"aes128-gcm@openssh.com", 24), (b"aes128-gcm@openssh.com", 32),
    (b"aes256-gcm@openssh.com", 0), (b"aes256-gcm@openssh.com", 16), (b"aes256-gcm@openssh.com", 24),
    (b"aes256-gcm@openssh.com", 31), (b"aes256-gcm@openssh.com", 33),
])
def test_wrong_key_sizes_via_get_encryption(algorithm: bytes, key_size: int) -> None:
    """Never a silently different cipher: a 24-byte key for aes128-gcm would be AES-192 to
    cryptography's AESGCM (asyncssh's own shim passes it through)."""
    gcm.install()
    with pytest.raises(ValueError, match="-byte key"):
        asyncssh.encryption.get_encryption(algorithm, bytes(key_size), bytes(12))


@pytest.mark.parametrize("iv_size", [0, 4, 11, 13, 16])
def test_wrong_iv_sizes_via_get_encryption(iv_size: int) -> None:
    gcm.install()
    for algorithm, size in ((b"aes128-gcm@openssh.com", 16), (b"aes256-gcm@openssh.com", 32)):
        with pytest.raises(ValueError, match="12-byte IV"):
            asyncssh.encryption.get_encryption(algorithm, bytes(size), bytes(iv_size))


def test_install_is_idempotent_and_replaces_only_the_gcm_entries() -> None:
    gcm.install()
    gcm.install()
    params = asyncssh.encryption._enc_params
    for algorithm, name in ((b"aes128-gcm@openssh.com", "aes128-gcm"),
                            (b"aes256-gcm@openssh.com", "aes256-gcm")):
        encryption, cipher_name = params[algorithm]
        assert encryption.__name__ == "_PacketGCMEncryption" and issubclass(encryption, GCMEncryption)
        assert cipher_name == name
        assert not encryption.needs_mac()
    assert params[b"chacha20-poly1305@openssh.com"][0] is ChachaEncryption
    assert asyncssh.encryption.get_encryption_params(b"aes256-gcm@openssh.com") == (32, 12, 16, 0, 16, True)
    assert asyncssh.encryption.get_encryption_params(b"aes128-gcm@openssh.com") == (16, 12, 16, 0, 16, True)
