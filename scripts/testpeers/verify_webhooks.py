"""Verifies webhook signatures with the Standard Webhooks reference library (PyPI
`standardwebhooks`), independently of Tally's own code. Reads JSON lines
{"secret", "id", "timestamp", "signature", "body"} from stdin; prints `ok` or
`fail: <why>` for each."""
import json
import sys

from standardwebhooks.webhooks import Webhook

for line in sys.stdin:
    if not line.strip():
        continue
    d = json.loads(line)
    try:
        Webhook(d["secret"]).verify(d["body"], {
            "webhook-id": d["id"],
            "webhook-timestamp": d["timestamp"],
            "webhook-signature": d["signature"],
        })
        print("ok", flush=True)
    except Exception as e:  # noqa: BLE001 - any refusal is reported, not raised
        print(f"fail: {e!r}", flush=True)
