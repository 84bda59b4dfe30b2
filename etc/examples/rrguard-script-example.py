#!/usr/bin/env python3
"""An rrguard `script` writer: a template for bridging rrguard to any DNS back end.

rrguard runs this once per operation with one JSON document on stdin (schema version 1, see
docs/writers.md, "script") and reads the outcome from the exit code:

    0 done    1 transient (retried with backoff)    2 rejected    3 authentication    4 conflict

This example keeps its "zone" in a JSON file, {"www.example.com.": {"records": [{"address": "192.0.2.1",
"ttl": 30}], "cname": null}, ...}, named by the environment variable RRGUARD_EXAMPLE_ZONE (relative to
the configuration file's directory, the script's working directory). It honours preconditions under
a file lock, so it may be declared with compare_and_swap = true:

    [[writer]]
    name = "example"
    type = "script"
    command = ["./rrguard-script-example.py"]
    env = { RRGUARD_EXAMPLE_ZONE = "example-zone.json" }
    compare_and_swap = true

To talk to a real back end, replace load_zone/save_zone (and the lock) with its API calls; keep the
exit codes, print the read reply on stdout and anything else on stderr.
"""

import fcntl
import ipaddress
import json
import os
import sys
import tempfile
from contextlib import contextmanager

OK, TRANSIENT, REJECTED, AUTH, CONFLICT = 0, 1, 2, 3, 4


def fail(code, message):
    """Ends the run with exit code `code`; rrguard quotes stderr in its log."""
    print(message, file=sys.stderr)
    sys.exit(code)


def canonical(address):
    """The canonical text of an address (RFC 5952 for IPv6), as rrguard sends it."""
    return str(ipaddress.ip_address(address))


@contextmanager
def locked(path):
    """Holds an exclusive lock for the whole read-check-write, which is what makes it a
    compare-and-swap: nobody else using the lock can change the zone in between."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_zone(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        fail(TRANSIENT, f"cannot read {path}: {e}")


def save_zone(path, zone):
    """Replaces the file atomically: a reader sees the old zone or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".zone-")
    with os.fdopen(fd, "w") as f:
        json.dump(zone, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read(entry):
    json.dump({"records": entry["records"], "cname": entry.get("cname")}, sys.stdout)


def family(address):
    return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"


def apply(request, entry):
    """The new entry, or an exit with CONFLICT when the precondition does not hold."""
    current = {canonical(r["address"]): r["ttl"] for r in entry["records"]}
    cname = entry.get("cname")
    touched = set(request["families"])
    pre = request["precondition"]
    if "rrset_equals" in pre:
        # Per touched RRset, as RFC 2136 prerequisites do: AAAA records do not matter to a change of A.
        expected = {canonical(a) for a in pre["rrset_equals"]}
        for rrset in touched:
            now = {a for a in current if family(a) == rrset}
            want = {a for a in expected if family(a) == rrset}
            if now != want:
                fail(CONFLICT, f"{request['fqdn']} {rrset} is {sorted(now)}, not {sorted(want)}")
    elif pre.get("name_not_in_use"):
        if current or cname:
            fail(CONFLICT, f"{request['fqdn']} is in use")
    else:
        fail(REJECTED, f"unknown precondition {pre}")
    if cname and request["add"]:
        fail(REJECTED, f"{request['fqdn']} is a CNAME to {cname}: addresses cannot be added beside it")
    # The precondition held, so `desired` is the whole new content of the touched RRsets.
    kept = [{"address": a, "ttl": t} for a, t in current.items() if family(a) not in touched]
    records = kept + [{"address": r["address"], "ttl": r["ttl"]} for r in request["desired"]]
    return {"records": records, "cname": cname}


def main():
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        fail(REJECTED, f"stdin is not JSON: {e}")
    if request.get("version") != 1:
        fail(REJECTED, f"this script speaks version 1, got {request.get('version')}")
    path = os.environ.get("RRGUARD_EXAMPLE_ZONE")
    if not path:
        fail(REJECTED, "set env = { RRGUARD_EXAMPLE_ZONE = \"FILE\" } in the writer's section")
    fqdn = request["fqdn"].lower()
    with locked(path + ".lock"):
        zone = load_zone(path)
        entry = zone.get(fqdn, {"records": [], "cname": None})
        if request["operation"] == "read":
            read(entry)
        elif request["operation"] == "apply":
            new = apply(request, entry)
            if new["records"] or new["cname"]:
                zone[fqdn] = new
            else:
                zone.pop(fqdn, None)
            save_zone(path, zone)
        else:
            fail(REJECTED, f"unknown operation {request['operation']!r}")
    return OK


if __name__ == "__main__":
    sys.exit(main())
