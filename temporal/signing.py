"""Optional signatures: proof that a manifest was written by whoever holds a key.

``manifest_sha256`` catches accidents, not intent: anyone who edits a
manifest can recompute it. A signature cannot be recomputed without the key.
``export(..., signing_key=KEY)`` (CLI ``--signing-key-file``) writes
``manifest.sig`` next to the manifest: an HMAC-SHA256 over the manifest's
exact bytes. ``verify(..., key=KEY)`` (CLI ``--key-file``) then requires it.

Who it protects against: anyone who can change the export folder (a shared
disk, a bucket, a colleague's copy) but does not hold the key. They can still
delete an export or put back an older one signed with the same key, and
anyone who holds the key can sign anything: it is a shared secret (HMAC), so
the verifier can sign too. Use one key per producer and keep it out of the
export folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from temporal.errors import TemporalError

ALGORITHM = "hmac-sha256"
SIGNATURE_NAME = "manifest.sig"


class SigningError(TemporalError):
    """A signing key that cannot be used."""


def read_key(path: str | Path) -> bytes:
    """A key from a file (its bytes, without a trailing newline); refuse an empty one."""
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as error:
        raise SigningError(f"cannot read the key file {path}: {error.strerror}") from None
    if len(key) < 16:
        raise SigningError(f"the key in {path} is shorter than 16 bytes; use a long random "
                           "key (e.g. `head -c 32 /dev/urandom | base64 > key`)")
    return key


def _mac(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign(manifest: Path, key: bytes) -> Path:
    """Write ``manifest.sig`` beside ``manifest``."""
    target = manifest.parent / SIGNATURE_NAME
    body = {"algorithm": ALGORITHM, "signature": _mac(manifest.read_bytes(), key)}
    target.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return target


def check(manifest: Path, key: bytes) -> str | None:
    """None when ``manifest`` carries a valid signature made with ``key``; else why not."""
    path = manifest.parent / SIGNATURE_NAME
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        algorithm, signature = body["algorithm"], body["signature"]
    except FileNotFoundError:
        return f"no {SIGNATURE_NAME}: the manifest is not signed"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{SIGNATURE_NAME} cannot be read"
    if algorithm != ALGORITHM or not isinstance(signature, str):
        return f"{SIGNATURE_NAME} uses {algorithm!r}; this library checks {ALGORITHM}"
    if not hmac.compare_digest(signature, _mac(manifest.read_bytes(), key)):
        return "the manifest was not signed with this key, or was changed after signing"
    return None
