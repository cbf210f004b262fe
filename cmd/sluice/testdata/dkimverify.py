#!/usr/bin/python3
"""Verify every DKIM-Signature of a message with dkimpy (Debian: python3-dkim).

usage: dkimverify.py RECORDS.json < message

RECORDS.json maps key record names ("sel._domainkey.example.test", without
the trailing dot) to the TXT value, its strings joined. Those are the only
keys the verifier sees: nothing is looked up in the system's DNS.

Prints one JSON object (one line) per signature, topmost first:
  {"index": 0, "d": "...", "s": "...", "a": "rsa-sha256", "ok": true, "error": ""}
Exit status: 0 when the message has at least one signature and every one
verifies; 1 when one does not (or there is none); 2 on usage errors;
3 when ed25519 support (python3-nacl) is missing.
"""

import json
import logging
import sys

import dkim
from dkim.util import parse_tag_value


class Collect(logging.Handler):
    """Keeps what dkimpy logs, so that a failure says why."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        if record.levelno >= logging.INFO:
            self.lines.append(record.getMessage())


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        records = {k.lower().rstrip("."): v for k, v in json.load(f).items()}
    message = sys.stdin.buffer.read()

    def dnsfunc(name, timeout=5):
        n = name.decode("ascii").lower().rstrip(".")
        v = records.get(n)
        return v.encode("ascii") if v is not None else None

    headers = dkim.DKIM(message).headers
    sigs = [v for k, v in headers if k.lower() == b"dkim-signature"]
    status = 0 if sigs else 1
    for i, raw in enumerate(sigs):
        tags = parse_tag_value(b" ".join(raw.split()))
        log = logging.getLogger("dkimverify.%d" % i)
        log.propagate = False
        log.setLevel(logging.DEBUG)
        collect = Collect()
        log.addHandler(collect)
        # A fresh verifier per signature: each index is checked on its own.
        d = dkim.DKIM(message, logger=log)
        try:
            ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
            err = "" if ok else "; ".join(collect.lines) or "signature does not verify"
        except dkim.NaClNotFoundError as e:
            print("dkimverify.py: %s (install python3-nacl)" % e, file=sys.stderr)
            return 3
        except dkim.DKIMException as e:
            ok, err = False, "%s: %s" % (type(e).__name__, e)
        if not ok:
            status = 1
        print(json.dumps({
            "index": i,
            "d": tags.get(b"d", b"").decode("ascii", "replace"),
            "s": tags.get(b"s", b"").decode("ascii", "replace"),
            "a": tags.get(b"a", b"").decode("ascii", "replace"),
            "ok": ok,
            "error": err,
        }))
    return status


if __name__ == "__main__":
    sys.exit(main())
