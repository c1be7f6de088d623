"""uvicorn's own records go through pixelgate's logging pipeline (format and redaction)
in a real ``pixelgate serve`` (issue 14, defect 5)."""

from __future__ import annotations

import json
import socket
import time

from tests.acceptance.conftest import ServerFactory, placeholder_config


def test_uvicorn_error_records_are_structured_and_redacted(start_server: ServerFactory) -> None:
    server = start_server(config=placeholder_config(), env={"PIXELGATE_LOG_FORMAT": "json"})
    secret = "sk-UVICORNLEAK12345"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        # not HTTP at all: uvicorn answers 400 and logs "Invalid HTTP request received."
        conn.sendall(f"GARBAGE {secret} \x00\x01\r\n\r\n".encode())
        conn.recv(1024)
    deadline = time.monotonic() + 10
    while "Invalid HTTP request" not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in server.stderr().splitlines() if "Invalid HTTP request" in line]
    assert lines, server.stderr()
    record = json.loads(lines[0])  # one JSON object per line, like pixelgate's own events
    assert record["logger"] == "uvicorn.error" and record["level"] == "warning"
    assert secret not in server.stderr()
