#!/usr/bin/env python3
"""Check a fleetlog export and checkpoint with tools fleetlog does not control.

    scripts/audit-independent.py EXPORT.ndjson CHECKPOINT.txt VERIFIER_KEY

Uses only the Python standard library and the `openssl` command:
  * the checkpoint's Ed25519 signature (C2SP signed note) is checked by `openssl pkeyutl`
    against the public key in the verifier string, whose key id is recomputed;
  * every event's hash is recomputed as SHA-256 of its RFC 8785 (JCS) form without "hash",
    with a JCS serialiser written here, and each line must be exactly that canonical form;
  * the chain (prev_hash) and the gapless seqs are checked;
  * the RFC 9162 Merkle root of the first N events (leaf = SHA-256(0x00 || line)) is
    recomputed and compared with the checkpoint's root for its size N.
Exits 0 when everything holds, 1 with a message otherwise.
"""

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile


def fail(message):
    print(f"MISMATCH: {message}", file=sys.stderr)
    sys.exit(1)


def jcs_number(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        fail("a number is not finite")
    if value == 0:
        return "0"
    # ECMAScript Number::toString from Python's shortest round-trip digits.
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    integer, _, fraction = mantissa.partition(".")
    digits = (integer + fraction).lstrip("0")
    point = len(integer) + int(exponent or 0) - (len(integer + fraction) - len((integer + fraction).lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        exponent = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if exponent >= 0 else "-") + str(abs(exponent))
    return sign + text


def jcs(value):
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return jcs_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + jcs(value[key]) for key in keys) + "}"
    fail(f"unexpected JSON value {value!r}")


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves):
    """RFC 9162 MTH, with a stack of complete subtrees."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    peaks = []
    for leaf in leaves:
        height, digest = 0, leaf
        while peaks and peaks[-1][0] == height:
            digest = node(peaks.pop()[1], digest)
            height += 1
        peaks.append((height, digest))
    digest = peaks[-1][1]
    for _, left in reversed(peaks[:-1]):
        digest = node(left, digest)
    return digest


def check_signature(note, verifier):
    # The name holds no "+", but base64 may: split from the left.
    name, key_id, key = verifier.strip().split("+", 2)
    key = base64.b64decode(key)
    if len(key) != 33 or key[0] != 1:
        fail("the verifier key is not an Ed25519 key")
    if hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() != key_id:
        fail("the verifier key's id does not match its name and key")
    body, _, signatures = note.partition("\n\n")
    body += "\n"
    blob = None
    for line in signatures.splitlines():
        signer, _, encoded = line.removeprefix("\u2014 ").partition(" ")
        decoded = base64.b64decode(encoded)
        if signer == name and decoded[:4].hex() == key_id:
            blob = decoded
    if blob is None or len(blob) != 68:
        fail("the checkpoint has no signature by this key")
    with tempfile.TemporaryDirectory() as directory:
        paths = {part: os.path.join(directory, part) for part in ("key.der", "body", "signature")}
        with open(paths["key.der"], "wb") as out:
            out.write(bytes.fromhex("302a300506032b6570032100") + key[1:])
        with open(paths["body"], "wb") as out:
            out.write(body.encode())
        with open(paths["signature"], "wb") as out:
            out.write(blob[4:])
        result = subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", paths["key.der"],
             "-rawin", "-in", paths["body"], "-sigfile", paths["signature"]],
            capture_output=True, text=True)
    if result.returncode != 0:
        fail("openssl says the checkpoint signature does not verify")
    origin, size, root = body.splitlines()[:3]
    if origin != name:
        fail(f"the checkpoint is for {origin}, the key for {name}")
    return int(size), base64.b64decode(root)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    export_path, checkpoint_path, verifier = sys.argv[1:]
    with open(checkpoint_path, encoding="utf-8") as file:
        size, root = check_signature(file.read(), verifier)
    leaves, previous = [], "0" * 64
    with open(export_path, "rb") as export:
        for number, raw in enumerate(export, start=1):
            line = raw.rstrip(b"\n")
            event = json.loads(line)
            if event.get("seq") != number:
                fail(f"line {number} holds seq {event.get('seq')}")
            if jcs(event).encode() != line:
                fail(f"seq {number} is not in canonical form")
            content = {key: value for key, value in event.items() if key != "hash"}
            if hashlib.sha256(jcs(content).encode()).hexdigest() != event["hash"]:
                fail(f"seq {number}: the content does not hash to its hash")
            if event["prev_hash"] != previous:
                fail(f"seq {number} does not link to seq {number - 1}")
            previous = event["hash"]
            leaves.append(hashlib.sha256(b"\x00" + line).digest())
    if len(leaves) < size:
        fail(f"the export has {len(leaves)} events, the checkpoint covers {size}")
    if root_of(leaves[:size]) != root:
        fail(f"the root of the first {size} events differs from the checkpoint")
    print(f"ok: {len(leaves)} events chained; the root of the first {size} matches the signed checkpoint")


if __name__ == "__main__":
    main()
