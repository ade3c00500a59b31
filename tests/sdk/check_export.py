"""Checks `tandem log export` output (JSON lines on stdin) for the events one SDK sent:
python3 check_export.py SDK  (python | node | browser)."""
import json
import sys

sdk = sys.argv[1]
events = [json.loads(line) for line in sys.stdin if line.strip()]
user = {"python": "py-user", "node": "node-user", "browser": "browser-user"}[sdk]
mine = [e for e in events if e.get("userId") == user or (e.get("properties") or {}).get("sdk") == sdk]
# Calls made before identify (or grouped with it) carry only the SDK's anonymousId.
anonymous = {e.get("anonymousId") for e in mine if e.get("anonymousId")}
mine += [e for e in events if e not in mine and e.get("anonymousId") in anonymous]
types = sorted({e["type"] for e in mine})
want = {"python": ["alias", "group", "identify", "page", "screen", "track"],
        "node": ["alias", "group", "identify", "page", "screen", "track"],
        "browser": ["alias", "group", "identify", "page", "track"]}[sdk]
problems = []
if types != want:
    problems.append(f"types stored {types}, expected {want}")
for event in mine:
    for field in ("messageId", "receivedAt", "timestamp", "type"):
        if not event.get(field):
            problems.append(f"{event.get('type')} event lacks {field}")
    if "writeKey" in event:
        problems.append("writeKey was stored")
    if not (event.get("context") or {}).get("library", {}).get("name"):
        problems.append(f"{event['type']} lost context.library from the SDK")
ids = [e["messageId"] for e in mine]
if len(ids) != len(set(ids)):
    problems.append("duplicate messageIds in the export")
if problems:
    print(f"{sdk}: " + "; ".join(sorted(set(problems))))
    sys.exit(1)
print(f"{sdk}: {len(mine)} events stored with messageId, receivedAt, timestamp")
