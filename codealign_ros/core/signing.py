"""ROS-free message authentication of code maps: keys, trust store, signatures, replay.

Scheme (CodeMap.msg SIGNATURE_ECDSA_P256_SHA256): ECDSA over NIST P-256 with SHA-256, the
scheme IEEE 1609.2 and ETSI TS 103 097 mandate for V2X messages (what V2X hardware security
modules implement), through the `cryptography` package (OpenSSL). The signature covers
`core.wire.canonical_bytes` of every field a receiver uses and travels as 64 bytes r || s
(big-endian, fixed width as in IEEE 1609.2; not DER). A key id is the first 8 bytes (16 hex
digits) of SHA-256 over the public key's DER SubjectPublicKeyInfo.

Files (`codealign keys generate --agent ID --out DIR`): DIR/ID.key (PKCS#8 PEM, mode 0600)
and DIR/ID.pub (SubjectPublicKeyInfo PEM). A trust store is a directory of `<agent>.pub`
files: the file name pins the agent id the key may sign for.

`LinkVerifier.check` returns the drop reason of one map (LINK_REASONS) or None plus a ticket;
`commit(ticket)` records its stamp as the newest accepted one of its key and code space
(replay protection: a later map must be strictly newer).
"""
from __future__ import annotations

import collections
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from codealign_ros.core.wire import WireFields, canonical_bytes
from codealign_ros.errors import CodeAlignError

__all__ = ["LINK_REASONS", "SCHEME_ECDSA_P256_SHA256", "SCHEME_NONE", "LinkVerifier",
           "Signer", "SigningError", "TrustStore", "generate_keys", "key_id", "sign_fields"]

SCHEME_NONE = 0
SCHEME_ECDSA_P256_SHA256 = 1
SIGNATURE_BYTES = 64
KEY_ID_HEX = 16
LINK_REASONS = ("unsigned", "unknown_key", "key_agent_mismatch", "bad_signature", "replayed")
_CURVE = ec.SECP256R1()
_HASH = ec.ECDSA(hashes.SHA256())


class SigningError(CodeAlignError, ValueError):
    """A key file is missing, unreadable or of the wrong kind (set-up error, not a drop)."""

    reason: str = "signing"


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """16 hex digits: SHA-256 of the DER SubjectPublicKeyInfo, first 8 bytes."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:KEY_ID_HEX]


def keys_hint(agent: str, key_dir: Path | str) -> str:
    """The command that makes `agent`'s key pair."""
    return f"codealign keys generate --agent {agent} --out {key_dir}"


def key_paths(agent: str, directory: Path | str) -> tuple[Path, Path]:
    """(private key, public key) file of `agent` in `directory`."""
    d = Path(directory)
    return d / f"{agent}.key", d / f"{agent}.pub"


def generate_keys(agent: str, out_dir: Path | str, overwrite: bool = False
                  ) -> tuple[Path, Path, str]:
    """A new P-256 key pair for `agent`: (private key file (0600), public key file, key id)."""
    private, public = key_paths(agent, out_dir)
    if not overwrite and (private.exists() or public.exists()):
        raise SigningError(f"{private} or {public} exists (use --force to replace it)")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(_CURVE)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private.unlink(missing_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    os.chmod(private, 0o600)  # whatever the umask
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key_id(key.public_key())


class Signer:
    """Signs one agent's maps with its private key."""

    def __init__(self, agent_id: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or \
                private_key.curve.name != _CURVE.name:
            raise SigningError("signing keys must be ECDSA P-256 (codealign keys generate)")
        self.agent_id, self._key = agent_id, private_key
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_file(cls, agent_id: str, path: Path | str) -> Signer:
        """Load a PKCS#8 PEM private key; SigningError naming the file when unusable."""
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SigningError(f"cannot load signing key {path}: {exc}") from None
        return cls(agent_id, key)  # type: ignore[arg-type]

    def sign(self, payload: bytes) -> bytes:
        """64-byte r || s ECDSA P-256 / SHA-256 signature of `payload`."""
        r, s = decode_dss_signature(self._key.sign(payload, _HASH))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_fields(signer: Signer, fields: WireFields) -> bytes:
    """Signature of `fields` (whose signer_key_id / scheme must already be the signer's)."""
    if fields.signer_key_id != signer.key_id or fields.signature_scheme != \
            SCHEME_ECDSA_P256_SHA256:
        raise SigningError("set signer_key_id and signature_scheme before signing")
    return signer.sign(canonical_bytes(fields))


def warm_verifier() -> None:
    """One sign and verify with a throwaway key: a receiver's first real check then pays
    no first use of the ECDSA code."""
    key = ec.generate_private_key(_CURVE)
    signer = Signer("warmup", key)
    if not verify(key.public_key(), signer.sign(b"warmup"), b"warmup"):
        raise SigningError("ECDSA P-256 self-check failed")


def verify(public_key: ec.EllipticCurvePublicKey, signature: bytes, payload: bytes) -> bool:
    """True when `signature` (64 bytes r || s) is valid for `payload`."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), payload, _HASH)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class TrustedKey:
    """A trusted public key and the one agent id it may sign for."""

    agent_id: str
    public_key: ec.EllipticCurvePublicKey


class TrustStore:
    """Trusted public keys by key id, loaded from a directory of `<agent>.pub` files."""

    def __init__(self, keys: dict[str, TrustedKey]) -> None:
        self.keys = dict(keys)

    @classmethod
    def from_dir(cls, directory: Path | str) -> TrustStore:
        """Every `*.pub` in `directory`; SigningError for an unreadable or non-P-256 key or
        one key listed under two agent ids."""
        keys: dict[str, TrustedKey] = {}
        for path in sorted(Path(directory).glob("*.pub")):
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise SigningError(f"cannot load trusted key {path}: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVE.name:
                raise SigningError(f"trusted key {path} is not an ECDSA P-256 key")
            kid = key_id(key)
            if kid in keys and keys[kid].agent_id != path.stem:
                raise SigningError(f"{path}: the same key is trusted for {keys[kid].agent_id}")
            keys[kid] = TrustedKey(path.stem, key)
        return cls(keys)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class Ticket:
    """What `commit` records for an accepted map."""

    key_id: str
    code_space: str
    stamp_ns: int
    source: str | None = None  # publisher of the map (receiver bookkeeping)
    local: bool = False  # taken from the ego's local topic


class LinkVerifier:
    """Signature, identity and replay checks of received maps against a trust store."""

    def __init__(self, trust: TrustStore, replay_entries: int = 4096) -> None:
        self.trust, self.max_entries = trust, int(replay_entries)
        self.newest: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()

    def check(self, fields: WireFields, signature: bytes) -> tuple[str | None, Ticket | None]:
        """(None, ticket) for an authentic, fresh map, else (reason, None); cheap checks
        first, the signature is verified before the replay check so that a forgery is
        counted as bad_signature whatever its stamp."""
        if fields.signature_scheme == SCHEME_NONE and not signature:
            return "unsigned", None
        trusted = self.trust.keys.get(fields.signer_key_id)
        if fields.signature_scheme != SCHEME_ECDSA_P256_SHA256 or trusted is None:
            return "unknown_key", None
        if trusted.agent_id != fields.agent_id:
            return "key_agent_mismatch", None
        if not verify(trusted.public_key, bytes(signature), canonical_bytes(fields)):
            return "bad_signature", None
        last = self.newest.get((fields.signer_key_id, fields.code_space))
        if last is not None and fields.stamp_ns <= last:
            return "replayed", None
        return None, Ticket(fields.signer_key_id, fields.code_space, fields.stamp_ns)

    def commit(self, ticket: Ticket) -> None:
        """Record an accepted map's stamp (bounded table, least recently used evicted)."""
        slot = (ticket.key_id, ticket.code_space)
        self.newest[slot] = max(ticket.stamp_ns, self.newest.get(slot, ticket.stamp_ns))
        self.newest.move_to_end(slot)
        while len(self.newest) > self.max_entries:
            self.newest.popitem(last=False)
