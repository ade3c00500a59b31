"""Sends every call type through Segment's Python SDK (segment-analytics-python, from PyPI),
gzip on, to tandem at $TANDEM_URL; fails if the SDK reports any error."""
import os
import sys

from segment.analytics.client import Client

errors = []
client = Client(
    write_key=os.environ["WRITE_KEY"],
    host=os.environ["TANDEM_URL"],
    gzip=True,
    sync_mode=False,
    max_retries=0,
    on_error=lambda error, batch: errors.append(repr(error)),
)
marker = {"sdk": "python"}
client.identify("py-user", {"email": "py@example.test", "plan": "pro"}, context={"library": {"name": "probe"}})
client.track("py-user", "Order Completed", {"revenue": 42.5, **marker})
client.page("py-user", "Docs", "Install", {"url": "https://example.test/docs", **marker})
client.screen("py-user", "App", "Home", {**marker})
client.group("py-user", "py-group", {"name": "Acme"})
client.alias("py-anon", "py-user")
client.track(anonymous_id="py-anon-2", event="Anonymous Event", properties=marker)
client.flush()
client.join()
if errors:
    print("python SDK reported errors:", errors)
    sys.exit(1)
print("python SDK: 7 calls sent, no errors")
