"""A real SMTP server for the tests (aiosmtpd, from PyPI): prints `listening PORT`, then
one JSON line per message received: envelope sender and recipients, subject, Message-ID,
and the text and HTML parts."""
import email
import json
import socket
import sys
import time
from email import policy

from aiosmtpd.controller import Controller


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        text = html = None
        for part in msg.walk():
            kind = part.get_content_type()
            if kind == "text/plain" and text is None:
                text = part.get_content()
            elif kind == "text/html" and html is None:
                html = part.get_content()
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "text": text,
            "html": html,
        }), flush=True)
        return "250 Message accepted for delivery"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


port = free_port()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(f"listening {port}", flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    controller.stop()
    sys.exit(0)
