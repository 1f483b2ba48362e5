"""Run many operations' REST commands in as few HTTP requests as the portal allows.

Each operation is a generator (``bridge.crm.bitrix24.handlers``) that yields
what it needs and gets it back:

* ``Need([Find...])``: records looked up by key. The runner gathers the keys
  of all operations into bulk list commands (one command for up to 50 keys),
  so 500 products cost 10 lookups, not 500.
* ``Send([Cmd...])``: writes. Queued in operation order and packed 50 to a
  request; a command that needs the id of one created earlier holds a
  ``Ref``, sent as ``$result[key][...]`` when both travel in one request.
* ``Post([Line...])``: stock differences. Lines of many operations share one
  inventory document per request and type (arrival "S", deduction "D"):
  document, lines and posting travel together, so nothing is left half done
  between requests.

Per record, operations run in order (``blockers``): a later operation on the
same record and aspect starts when the earlier one has finished.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from bridge.crm.base import Result
from bridge.crm.bitrix24.client import LIMIT_ERRORS, MAX_COMMANDS, BatchAnswer
from bridge.errors import TransientError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Cmd:
    method: str
    params: dict[str, Any]
    owner: int | None = None  # the operation it belongs to (None: shared, e.g. a stock document)
    status: str = "new"  # new, packed (in the request being built or sent), ok, failed
    result: Any = None
    error: str | None = None
    code: str | None = None
    key: str = ""
    lookup: Any = None  # set on list commands the lookups sent (see bridge.crm.bitrix24.lookups)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed")

    def ref(self, *path: str | int) -> Ref:
        return Ref(self, path)

    def fail(self, error: str, code: str | None = None) -> None:
        self.status, self.error, self.code = "failed", error, code


@dataclass(frozen=True, eq=False)
class Ref:
    """A value a command will produce: an id not known until the portal answers."""

    cmd: Cmd
    path: tuple[str | int, ...] = ()

    def value(self) -> Any:
        value = self.cmd.result
        for part in self.path:
            value = value[part] if isinstance(value, dict) else value[int(part)]
        return value


def concrete(value: Any) -> Any:
    """``value`` with a Ref to an answered command replaced by what it produced (else unchanged)."""
    if isinstance(value, Ref) and value.cmd.ok:
        try:
            return value.value()
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return value


@dataclass(frozen=True, slots=True)
class Find:
    kind: str
    key: Any


@dataclass(slots=True)
class Need:
    finds: list[Find]


@dataclass(slots=True)
class Send:
    cmds: list[Cmd]


@dataclass(eq=False)
class Line:
    product: int | Ref
    store: int
    delta: Decimal
    cmd: Cmd | None = None
    posted: bool = False
    error: str | None = None
    post: Any = None  # the Post it belongs to
    doc: Any = None  # the document it travelled in


@dataclass(eq=False)
class Post:
    lines: list[Line]
    solo: bool = False  # its own documents: after a shared one failed, find which operation it was
    owner: int = -1
    done: bool = False
    outcome: str = ""  # ok, failed, restart (nothing refused for good), solo (retry alone)
    error: str | None = None


Yield = Need | Send | Post
Handler = Generator[Yield, Any, Result]


class Lookups(Protocol):
    def known(self, find: Find) -> bool: ...
    def value(self, find: Find) -> Any: ...
    def want(self, finds: list[Find]) -> None: ...
    def commands(self, room: int) -> list[Cmd]: ...
    def absorb(self, cmd: Cmd, answer: BatchAnswer) -> None: ...


class Documents(Protocol):
    """How a stock document is written on this portal."""

    def add(self, doc_type: str) -> Cmd: ...
    def element(self, doc: Cmd, doc_type: str, line: Line) -> Cmd: ...
    def conduct(self, doc: Cmd) -> Cmd: ...
    def delete(self, doc: Cmd) -> Cmd: ...


@dataclass(eq=False)
class _Doc:
    doc_type: str
    add: Cmd
    conduct: Cmd | None = None
    lines: list[Line] = field(default_factory=list)
    posted: bool = False
    error: str | None = None
    throttled: bool = False

    def commands(self) -> list[Cmd]:
        return [self.add, *(line.cmd for line in self.lines if line.cmd is not None),
                *([self.conduct] if self.conduct is not None else [])]


class Runner:
    def __init__(self, send: Callable[[list[Cmd]], BatchAnswer], lookups: Lookups, documents: Documents,
                 handlers: list[Handler], blockers: list[set[int]], *, pause: Callable[[float], None],
                 backoff: float, max_wait: float = 120.0) -> None:
        self._send, self._lookups, self._documents = send, lookups, documents
        self._handlers = handlers
        self._blocked = [set(b) for b in blockers]
        self._unblocks: dict[int, list[int]] = {}
        for index, earlier in enumerate(blockers):
            for other in earlier:
                self._unblocks.setdefault(other, []).append(index)
        self._pause, self._backoff, self._max_wait = pause, backoff, max_wait
        self._results: list[Result | None] = [None] * len(handlers)
        self._waits: dict[int, Yield] = {}
        self._ready: list[tuple[int, Any]] = []
        self._queue: deque[Cmd | Post] = deque()
        self.requests = 0

    # ------------------------------------------------------------ the loop

    def run(self) -> list[Result]:
        for index, blocked in enumerate(self._blocked):
            if not blocked:
                heapq.heappush(self._ready, (index, None))
        throttled_rounds, waited = 0, 0.0
        while True:
            self._advance()
            if all(r is not None for r in self._results):
                return [r for r in self._results if r is not None]
            request, docs = self._pack()
            if not request:
                raise RuntimeError("bitrix24: operations wait for each other; nothing can be sent")
            for number, cmd in enumerate(request):
                cmd.key = f"c{number}"
            self.requests += 1
            log.debug("bitrix24.request commands=%d lookups=%d queued=%d", len(request),
                      sum(1 for c in request if c.lookup is not None), len(self._queue))
            answer = self._send(request)
            if self._absorb(request, docs, answer):
                # Some commands met a method's time limit: wait longer each round it lasts, then give up
                # (the caller's outbox tries the whole batch again later; nothing was done twice).
                pause = min(max(self._backoff, 0.01) * 2 ** throttled_rounds, 30.0)
                throttled_rounds += 1
                waited += pause
                if waited > self._max_wait:
                    raise TransientError(f"Bitrix24 kept refusing commands for {waited:.0f} s "
                                         "(OPERATION_TIME_LIMIT)")
                self._pause(pause)
            else:
                throttled_rounds = 0
            self._wake()

    def _advance(self) -> None:
        """Run the ready operations, lowest index first, until each waits for the portal or is done."""
        while self._ready:
            index, value = heapq.heappop(self._ready)
            handler = self._handlers[index]
            while True:
                if isinstance(value, _Late):
                    value = [self._lookups.value(f) for f in value.need.finds]
                try:
                    step = handler.send(value)
                except StopIteration as stop:
                    self._finish(index, stop.value)
                    break
                if isinstance(step, Need):
                    if all(self._lookups.known(f) for f in step.finds):
                        value = [self._lookups.value(f) for f in step.finds]
                        continue
                    self._lookups.want(step.finds)
                elif isinstance(step, Send):
                    if not step.cmds:
                        value = None
                        continue
                    for cmd in step.cmds:
                        cmd.owner = index
                        self._queue.append(cmd)
                elif isinstance(step, Post):
                    if not step.lines:
                        step.done, step.outcome = True, "ok"
                        value = step
                        continue
                    step.owner = index
                    self._queue.append(step)
                else:
                    raise TypeError(f"a handler yielded {step!r}")
                self._waits[index] = step
                break

    def _finish(self, index: int, result: Result) -> None:
        if not isinstance(result, Result):
            raise TypeError(f"operation {index} ended without a Result")
        self._results[index] = result
        for later in self._unblocks.get(index, ()):
            if not result.ok and result.retryable:
                # Tried again later, so the later operations on the record wait for it: applied now, they
                # would be overwritten by it (an older state) when it is.
                self._finish(later, Result(ok=False, retryable=True, error="waits for an earlier operation on "
                                           f"the same record, to be retried first ({result.error})"))
                continue
            self._blocked[later].discard(index)
            if not self._blocked[later]:
                heapq.heappush(self._ready, (later, None))

    def _wake(self) -> None:
        # Operations come back from lookups in index order only: one that creates a record
        # registers it when it resumes, and a later one on the same record must see that.
        lookups_pending = False
        for index, step in sorted(self._waits.items()):
            if isinstance(step, Need):
                if lookups_pending or not all(self._lookups.known(f) for f in step.finds):
                    lookups_pending = True
                    continue
                # The value is read when the handler runs, so it sees what earlier operations registered.
                value: Any = _Late(step)
            elif isinstance(step, Send):
                if not all(c.done for c in step.cmds):
                    continue
                value = None
            else:
                if not step.done:
                    continue
                value = step
            del self._waits[index]
            heapq.heappush(self._ready, (index, value))

    # ------------------------------------------------------------ building a request

    def _pack(self) -> tuple[list[Cmd], list[_Doc]]:
        request = self._lookups.commands(MAX_COMMANDS)
        for cmd in request:
            cmd.status = "packed"
        room = MAX_COMMANDS - len(request)
        docs: dict[tuple[str, int], _Doc] = {}
        while self._queue and room > 0:
            item = self._queue[0]
            if isinstance(item, Cmd):
                state = _readiness(item)
                if state == "blocked":
                    break
                self._queue.popleft()
                if state != "ready":
                    item.fail(state)
                    continue
                item.status = "packed"
                request.append(item)
                room -= 1
                continue
            needed, ok = self._post_cost(item, docs)
            if not ok:  # a line's product could not be created: the operation fails as a whole
                self._queue.popleft()
                error = next(r for r in (_readiness_value(line.product) for line in item.lines) if r != "ready")
                item.done, item.outcome, item.error = True, "failed", error
                continue
            if needed == -1:
                break
            if needed > MAX_COMMANDS:
                self._queue.popleft()
                item.done, item.outcome = True, "failed"
                item.error = f"{len(item.lines)} stock lines do not fit one request"
                continue
            if needed > room:
                break
            self._queue.popleft()
            room -= needed
            self._place(item, docs, request)
        for doc in docs.values():
            doc.conduct = self._documents.conduct(doc.add)
            doc.conduct.status = "packed"
            request.append(doc.conduct)
        return request, list(docs.values())

    def _post_cost(self, post: Post, docs: dict[tuple[str, int], _Doc]) -> tuple[int, bool]:
        """Commands this post adds to the request (-1: must wait), and False when it can never be sent."""
        states = {_readiness_value(line.product) for line in post.lines}
        if states - {"ready", "blocked"}:
            return 0, False
        if "blocked" in states:
            return -1, True
        needed = len(post.lines)
        for doc_type in {_doc_type(line) for line in post.lines}:
            if (doc_type, id(post) if post.solo else 0) not in docs:
                needed += 2  # the document and its posting
        return needed, True

    def _place(self, post: Post, docs: dict[tuple[str, int], _Doc], request: list[Cmd]) -> None:
        for line in post.lines:
            doc_type = _doc_type(line)
            slot = (doc_type, id(post) if post.solo else 0)
            doc = docs.get(slot)
            if doc is None:
                doc = docs[slot] = _Doc(doc_type, self._documents.add(doc_type))
                doc.add.status = "packed"
                request.append(doc.add)
            line.post = post
            doc.lines.append(line)
            line.cmd = self._documents.element(doc.add, doc_type, line)
            line.cmd.owner = post.owner
            line.cmd.status = "packed"
            request.append(line.cmd)

    # ------------------------------------------------------------ reading the answer

    def _absorb(self, request: list[Cmd], docs: list[_Doc], answer: BatchAnswer) -> bool:
        """Record each command's outcome; return True when the portal throttled some of them."""
        throttled = False
        for cmd in request:
            if cmd.key in answer.results:
                cmd.status, cmd.result = "ok", answer.results[cmd.key]
            else:
                code, text = answer.errors.get(cmd.key, ("NOT_RUN", "the portal did not run this command"))
                cmd.fail(f"{cmd.method}: {code}: {text}".rstrip(": "), code)
                throttled = throttled or _throttled(cmd)
            if cmd.lookup is not None:
                self._lookups.absorb(cmd, answer)
        in_docs = {id(c) for doc in docs for c in doc.commands()}
        retry: list[Cmd] = []
        for cmd in request:
            if cmd.ok or id(cmd) in in_docs or cmd.lookup is not None:
                continue
            # Refused before it ran (or failed only because what it refers to was): send it again.
            if _throttled(cmd) or any(ref.cmd in retry for ref in _refs(cmd.params)):
                cmd.status, cmd.error, cmd.code, cmd.result = "new", None, None, None
                retry.append(cmd)
        self._queue.extendleft(reversed(retry))
        self._settle(docs)
        return throttled

    def _settle(self, docs: list[_Doc]) -> None:
        """Say what became of each post; drop documents that were not posted."""
        posts: dict[int, Post] = {}
        for doc in docs:
            assert doc.conduct is not None
            doc.posted = doc.add.ok and doc.conduct.ok
            doc.error = doc.add.error if not doc.add.ok else doc.conduct.error
            doc.throttled = _throttled(doc.add) or _throttled(doc.conduct)
            for line in doc.lines:
                assert line.cmd is not None
                line.posted = doc.posted and line.cmd.ok
                line.error = None if line.posted else (line.cmd.error if not line.cmd.ok else doc.error)
                line.doc = doc
                posts[id(line.post)] = line.post
            if not doc.posted and doc.add.ok:  # a draft the portal would keep for ever
                self._queue.appendleft(self._documents.delete(doc.add))
        for post in posts.values():
            lines = post.lines
            if any(_throttled(line.cmd) or (line.doc is not None and line.doc.throttled) for line in lines):
                post.outcome = "restart"
            elif all(line.posted for line in lines):
                post.outcome = "ok"
            else:
                failed_doc = next((line.doc for line in lines if line.doc is not None and not line.doc.posted), None)
                shared = failed_doc is not None and len({id(l.post) for l in failed_doc.lines}) > 1
                if shared and not post.solo:
                    post.outcome = "solo"
                else:
                    post.outcome = "failed"
                    post.error = next(line.error for line in lines if not line.posted)
            post.done = True


class _Late:
    """Lookup results handed over when the handler resumes (see ``Runner._wake``)."""

    def __init__(self, need: Need) -> None:
        self.need = need


def _doc_type(line: Line) -> str:
    return "S" if line.delta > 0 else "D"


def _refs(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)


def _readiness_value(value: Any) -> str:
    for ref in _refs(value):
        if ref.cmd.status == "failed":
            return f"not sent: it needs {ref.cmd.method}, which failed ({ref.cmd.error})"
        if ref.cmd.status == "new":
            return "blocked"
    return "ready"


def _readiness(cmd: Cmd) -> str:
    """ready: can go in this request; blocked: needs a command not answered yet; else why it never can."""
    return _readiness_value(cmd.params)


def _throttled(cmd: Cmd | None) -> bool:
    return cmd is not None and cmd.status == "failed" and (cmd.code in LIMIT_ERRORS or cmd.code == "NOT_RUN")


def wire(cmd: Cmd) -> tuple[str, str, dict[str, Any]]:
    """``(key, method, params)`` with each Ref as its value or as ``$result[key][...]``."""

    def convert(value: Any) -> Any:
        if isinstance(value, Ref):
            if value.cmd.ok:
                return value.value()
            return f"$result[{value.cmd.key}]" + "".join(f"[{part}]" for part in value.path)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return cmd.key, cmd.method, convert(cmd.params)
