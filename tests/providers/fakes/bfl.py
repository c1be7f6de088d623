"""A fake Black Forest Labs API on two loopback hosts (PROVIDERS-2.md §4 and §8).

The submit host (``127.0.0.1``) takes ``POST /v1/{model}`` and ``GET /v1/credits`` and,
like BFL's regional clusters, answers with a ``polling_url`` on *another* host
(``127.0.0.2``). That host answers every poll with HTTP 200 whatever the task's status,
and serves each sample under a signed-looking URL that stops working ten minutes after
the task is ready (the fake's clock can be moved on with :meth:`FakeBfl.advance`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes import LoopbackServer, Received, Reply
from tests.providers.kit import json_reply

KEY = "bfl-SECRET-test-key-0123456789"
#: how long a sample URL works (docs.bfl.ai: "expire after 10 minutes")
SAMPLE_TTL_S = 600.0
POLL_HOST = "127.0.0.2"
EXPIRED = (
    b"<Error><Code>AuthenticationFailed</Code>"
    b"<Message>Signed expiry time has passed</Message></Error>"
)
#: models the fake serves, with their credit price (1 credit = $0.01)
CREDITS = {"flux-pro-1.1": 4.0, "flux-pro-1.1-ultra": 6.0, "flux-kontext-pro": 4.0}


@dataclass
class Task:
    """One submitted task: what was asked, and the statuses its polls will walk through."""

    id: str
    model: str
    body: dict[str, Any]
    #: statuses answered by successive polls; the last one repeats
    script: list[str]
    polls: int = 0
    ready_at: float | None = None


@dataclass
class FakeBfl:
    """The fake's state: tasks by id, the default script, and switches for failure modes."""

    image: bytes
    script: list[str] = field(default_factory=lambda: ["Pending", "Ready"])
    tasks: dict[str, Task] = field(default_factory=dict)
    #: answer submits with 429 and this ``Retry-After`` (seconds)
    busy: float | None = None
    #: answer polls of a task with 429 this many times before the real answer
    poll_throttles: int = 0
    #: send the polling URL on the submit host (no cross-host hop)
    same_host_polling: bool = False
    clock_offset: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    api: LoopbackServer | None = None
    poller: LoopbackServer | None = None

    # -- what tests look at ----------------------------------------------------------

    @property
    def submits(self) -> list[Received]:
        assert self.api is not None
        return [r for r in self.api.received if r.method == "POST"]

    @property
    def polls(self) -> list[Received]:
        servers = [s for s in (self.api, self.poller) if s is not None]
        return [r for s in servers for r in s.received if r.path.startswith("/v1/get_result")]

    @property
    def downloads(self) -> list[Received]:
        assert self.poller is not None
        return [r for r in self.poller.received if r.path.startswith("/results/")]

    def base_url(self) -> str:
        assert self.api is not None
        return self.api.url("")

    def advance(self, seconds: float) -> None:
        self.clock_offset += seconds

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- routes ----------------------------------------------------------------------

    def submit(self, model: str, req: Received) -> Reply:
        if req.headers.get("x-key") != KEY:
            return json_reply(403, {"detail": "Not authenticated - Invalid Authentication"})
        if self.busy is not None:
            headers = {"Retry-After": f"{self.busy:g}"}
            return json_reply(
                429, {"detail": "You have exceeded the number of active tasks"}, headers
            )
        body = json.loads(req.body)
        problems = _validate(model, body)
        if problems:
            return json_reply(422, {"detail": problems})
        task = Task(uuid.uuid4().hex, model, body, list(self.script))
        with self.lock:
            self.tasks[task.id] = task
        host = self.api if self.same_host_polling else self.poller
        assert host is not None
        polling_url = host.url(f"/v1/get_result?id={task.id}")
        return json_reply(200, {"id": task.id, "polling_url": polling_url, "cost": CREDITS[model]})

    def poll(self, req: Received) -> Reply:
        if req.headers.get("x-key") != KEY:
            return json_reply(403, {"detail": "Not authenticated - Invalid Authentication"})
        task_id = parse_qs(urlsplit(req.path).query).get("id", [""])[0]
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return json_reply(200, {"id": task_id, "status": "Task not found"})
            task.polls += 1
            if task.polls <= self.poll_throttles:
                return json_reply(429, {"detail": "slow down"}, {"Retry-After": "0.05"})
            status = task.script.pop(0) if len(task.script) > 1 else task.script[0]
        answer: dict[str, Any] = {"id": task.id, "status": status, "result": None}
        if status == "Pending":
            answer["progress"] = 0.5
        elif status == "Ready":
            if task.ready_at is None:
                task.ready_at = self.now()
            assert self.poller is not None
            expiry = task.ready_at + SAMPLE_TTL_S
            path = f"/results/{task.id}/sample.png"
            self.poller.routes[path] = self.sample
            answer["result"] = {
                "sample": self.poller.url(f"{path}?se={expiry:.0f}&sp=r&sig=fake"),
                "prompt": task.body.get("prompt"),
                "seed": task.body.get("seed", 966285791),
                "start_time": task.ready_at - 3.9,
                "end_time": task.ready_at,
                "duration": 3.9,
            }
        elif status.endswith("Moderated"):
            answer["details"] = self.details or {"Moderation Reasons": ["Derivative Works Filter"]}
        return json_reply(200, answer)

    def sample(self, req: Received) -> Reply:
        # A signed blob URL: no key wanted, useless once ``se`` has passed.
        if "x-key" in {name.lower() for name in req.headers}:
            return 400, {}, b"the API key must not be sent to the delivery host"
        expiry = float(parse_qs(urlsplit(req.path).query)["se"][0])
        if self.now() > expiry:
            return 403, {"Content-Type": "application/xml"}, EXPIRED
        return 200, {"Content-Type": "image/png"}, self.image

    def credits(self, req: Received) -> Reply:
        if req.headers.get("x-key") != KEY:
            return json_reply(403, {"detail": "Not authenticated - Invalid Authentication"})
        return json_reply(200, {"credits": 1234.5})


@contextmanager
def bfl_servers(image: bytes, **options: Any) -> Iterator[FakeBfl]:
    """Start the fake on its two hosts; stop both on exit."""
    fake = FakeBfl(image=image, **options)
    routes = {f"/v1/{model}": _bind(fake, model) for model in CREDITS}
    routes["/v1/get_result"] = fake.poll
    routes["/v1/credits"] = fake.credits
    with (
        LoopbackServer(routes) as api,
        LoopbackServer({"/v1/get_result": fake.poll}, host=POLL_HOST) as poller,
    ):
        fake.api, fake.poller = api, poller
        yield fake


def _bind(fake: FakeBfl, model: str) -> Any:
    return lambda req: fake.submit(model, req)


def _validate(model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    if not isinstance(body.get("prompt"), str):
        problems.append({"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"})
    for side in ("width", "height"):
        value = body.get(side)
        if value is not None and not (256 <= value <= 1440 and value % 32 == 0):
            problems.append(
                {
                    "loc": ["body", side],
                    "msg": "Input should be a multiple of 32 between 256 and 1440",
                    "type": "value_error",
                }
            )
    if model == "flux-pro-1.1-ultra" and "width" in body:
        problems.append({"loc": ["body", "width"], "msg": "Extra inputs", "type": "extra"})
    if body.get("output_format") not in (None, "jpeg", "png", "webp"):
        problems.append({"loc": ["body", "output_format"], "msg": "bad", "type": "enum"})
    return problems
