"""Shared state of several workers on Redis (``redis_url``): limits, the request queue,
live-call ownership and live-call control routing.

Everything here is an existing Redis mechanism, no protocol of our own:

* **limits** (:meth:`Cluster.take`): per key (``account:<auth_id>``, ``gateway:<name>``) a
  token bucket (calls per second, one second's burst) and a concurrency set, checked and
  taken together by one Lua script, so two workers never both take the last token or slot.
  The concurrency set is a sorted set of call uuids scored by their lease's expiry: a worker
  that dies stops renewing, and its calls' slots expire instead of leaking. Time is Redis's
  ``TIME``, one clock for every worker.
* **request queue** (:class:`RequestQueue`): a stream with one consumer group; a worker reads
  with ``XREADGROUP`` and acknowledges once the request is taken; entries a dead worker read
  and never acknowledged are taken by another with ``XAUTOCLAIM`` once idle longer than the
  lease.
* **ownership** (:meth:`Cluster.own`): ``ss:call:<uuid>`` → worker id, with a TTL lease the
  owner renews (:attr:`Cluster.lease_s`; renewed every third of it), deleted when the call
  ends; each worker's own liveness key ``ss:worker:<id>`` is renewed the same way.
* **rooms** (:meth:`Cluster.own_room`): ``ss:room:<account>:<name>`` → worker id, the
  conference room's owner (the worker whose process mixes it), under the same lease, set
  only if no live worker holds it (``SET NX``, or taken over from a dead owner).
* **control** (:meth:`Cluster.forward`): a live-call request (hangup, transfer, play, DTMF,
  record...) that reaches a worker not holding the call goes on the owner's stream
  ``ss:ctl:<worker id>``; the owner runs it (:attr:`Cluster.on_control`) and pushes the
  answer on a reply list the sender waits on (``BLPOP``, bounded).

The module knows no dialect and no HTTP: what a control request carries is opaque here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("softswitch.cluster")

__all__ = ["Cluster", "ControlTimeout", "RequestQueue", "Slot"]

#: Lua: take ``n`` tokens of a bucket and ``n`` slots of a concurrency set, both or neither.
#: KEYS[1] bucket hash, KEYS[2] slot zset; ARGV: rate (0 = unlimited), burst, max concurrent
#: (<0 = unlimited), lease seconds, n, then the n members (call uuids).
#: Returns the seconds to wait as a string: "0" taken; "inf" no slot free; else until a token.
_TAKE = """
local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2])
local limit = tonumber(ARGV[3]); local lease = tonumber(ARGV[4]); local n = tonumber(ARGV[5])
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) + n > limit then return 'inf' end
end
local tokens = burst
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
  if tokens < n - 1e-9 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    return tostring((n - tokens) / rate)
  end
  tokens = tokens - n
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end
if limit >= 0 then
  for i = 6, 5 + n do redis.call('ZADD', KEYS[2], now + lease, ARGV[i]) end
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease * 1000) + 1000)
end
return '0'
"""

#: Lua: push the expiry of members still in a slot set (a live worker's calls).
_RENEW = """
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return 1
"""

#: Lua: delete a key only while it still holds our value (never another owner's lease).
_RELEASE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ControlTimeout(Exception):
    """The owning worker did not answer a forwarded control request in time."""


@dataclass(frozen=True, slots=True)
class Slot:
    """What :meth:`Cluster.take` is asked for: a limit key with its rate and concurrency."""

    key: str  #: ``account:<auth_id>`` or ``gateway:<name>``
    cps: float  #: calls per second; <= 0: unlimited
    max_concurrent: int  #: < 0: unlimited


#: Runs one forwarded control request on the owner: payload in, answer out (JSON values).
ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Cluster:
    """One worker's view of the shared Redis state; see the module docstring."""

    def __init__(
        self, url: str, worker_id: str, *, lease_s: float = 15.0, prefix: str = "ss"
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.prefix = prefix
        self.redis: Any = aioredis.from_url(url, decode_responses=True)
        #: Separate connection for blocking reads (XREAD/BLPOP hold their connection).
        self._blocking: Any = aioredis.from_url(url, decode_responses=True)
        self._take = self.redis.register_script(_TAKE)
        self._renew = self.redis.register_script(_RENEW)
        self._release_if = self.redis.register_script(_RELEASE_IF)
        #: Calls this worker owns: uuid (and request uuid) -> the slot keys they hold.
        self.owned: dict[str, tuple[str, ...]] = {}
        #: Conference rooms this worker owns: their Redis keys.
        self.owned_rooms: set[str] = set()
        self.on_control: ControlHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # --- keys -------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- life -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.redis.ping()
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        self._tasks.append(
            loop.create_task(self._renew_loop(), name=f"cluster-renew-{self.worker_id}")
        )
        self._tasks.append(
            loop.create_task(self._control_loop(), name=f"cluster-control-{self.worker_id}")
        )

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            if self.owned_rooms:
                await self.redis.delete(*self.owned_rooms)
            if self.owned:
                # What this worker still holds goes with it (not left to the lease).
                await self.redis.delete(*(self._k("call", u) for u in self.owned))
                for uid, keys in list(self.owned.items()):
                    for key in keys:
                        await self.release(key, [uid])
            await self.redis.delete(self._k("worker", self.worker_id))
        for client in (self.redis, self._blocking):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _heartbeat(self) -> None:
        await self.redis.set(self._k("worker", self.worker_id), "1", px=int(self.lease_s * 1000))

    async def alive(self, worker_id: str) -> bool:
        """Whether ``worker_id`` renewed its lease within :attr:`lease_s`."""
        return bool(await self.redis.exists(self._k("worker", worker_id)))

    async def _renew_loop(self) -> None:
        """Every third of the lease: the worker's key, its calls' owner keys and slots."""
        while not self._closed:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception as exc:  # Redis away for a moment: the next round retries
                log.warning("cluster lease renewal failed: %s", exc)

    async def renew(self) -> None:
        await self._heartbeat()
        if not self.owned and not self.owned_rooms:
            return
        px = int(self.lease_s * 1000)
        by_slot: dict[str, list[str]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.owned_rooms:
                pipe.set(key, self.worker_id, px=px)
            for uid, slots in self.owned.items():
                pipe.set(self._k("call", uid), self.worker_id, px=px)
                for key in slots:
                    by_slot.setdefault(key, []).append(uid)
            await pipe.execute()
        for key, members in by_slot.items():
            await self._renew(keys=[self._k("slots", key)], args=[self.lease_s, *members])

    # --- limits -----------------------------------------------------------------------

    async def take(self, slots: Iterable[Slot], members: list[str]) -> float:
        """Take one token and one concurrency slot per member (call uuid) from every slot,
        all or (per slot) none; 0.0 when taken, else the seconds to wait (``inf``: no
        concurrency slot; retry when a call ends). A slot taken before a later one refused
        is given back."""
        taken: list[Slot] = []
        for slot in slots:
            if slot.cps <= 0 and slot.max_concurrent < 0:
                continue
            wait = float(
                await self._take(
                    keys=[self._k("bucket", slot.key), self._k("slots", slot.key)],
                    args=[
                        max(slot.cps, 0.0),
                        max(1.0, slot.cps),
                        slot.max_concurrent,
                        self.lease_s,
                        len(members),
                        *members,
                    ],
                )
            )
            if wait > 0:
                for done in taken:
                    await self.release(done.key, members)
                return wait
            taken.append(slot)
        keys = tuple(s.key for s in taken)
        for uid in members:
            self.owned[uid] = tuple(dict.fromkeys((*self.owned.get(uid, ()), *keys)))
        return 0.0

    async def release(self, key: str, members: Iterable[str]) -> None:
        """Give back the concurrency slots of ``members`` (calls over)."""
        members = list(members)
        for uid in members:
            if key in self.owned.get(uid, ()):
                self.owned[uid] = tuple(k for k in self.owned[uid] if k != key)
        if members:
            await self.redis.zrem(self._k("slots", key), *members)

    async def in_use(self, key: str) -> int:
        """Concurrency slots of ``key`` held under a live lease, across all workers."""
        return int(
            await self.redis.zcount(self._k("slots", key), "(" + str(await self._now()), "+inf")
        )

    async def _now(self) -> float:
        seconds, micros = await self.redis.time()
        return float(seconds) + float(micros) / 1e6

    # --- ownership --------------------------------------------------------------------

    async def own(self, *uids: str) -> None:
        """This worker holds these calls (call uuid, request uuid) from now on, under lease."""
        px = int(self.lease_s * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in uids:
                self.owned.setdefault(uid, ())
                pipe.set(self._k("call", uid), self.worker_id, px=px)
            await pipe.execute()

    async def disown(self, *uids: str) -> None:
        """These calls are over: their ownership keys and concurrency slots go."""
        for uid in uids:
            slots = self.owned.pop(uid, ())
            await self._release_if(keys=[self._k("call", uid)], args=[self.worker_id])
            for key in slots:
                await self.release(key, [uid])

    async def forget(self, key: str, uid: str) -> None:
        """A call this worker's previous run held is over (closed at start-up): its slot of
        ``key`` and its ownership go, if still ours."""
        await self.release(key, [uid])
        await self._release_if(keys=[self._k("call", uid)], args=[self.worker_id])

    async def owner(self, uid: str) -> str | None:
        """The worker holding call ``uid`` (call or request uuid), None when no one does."""
        value = await self.redis.get(self._k("call", uid))
        return str(value) if value else None

    # --- conference rooms -------------------------------------------------------------

    def _room_key(self, account: str, name: str) -> str:
        return self._k("room", account, name)

    async def own_room(self, account: str, name: str) -> str:
        """Claim room ``name`` of ``account`` for this worker unless a live worker holds it;
        returns the owner (this worker's id when claimed)."""
        key = self._room_key(account, name)
        px = int(self.lease_s * 1000)
        for _ in range(3):
            if await self.redis.set(key, self.worker_id, px=px, nx=True):
                self.owned_rooms.add(key)
                return self.worker_id
            owner = await self.redis.get(key)
            if owner == self.worker_id:
                self.owned_rooms.add(key)
                return self.worker_id
            if owner is not None and await self.alive(str(owner)):
                return str(owner)
            # The holder died (its worker key is gone before its room lease): take over.
            await self._release_if(keys=[key], args=[owner or ""])
        return str(await self.redis.get(key) or "")

    async def disown_room(self, account: str, name: str) -> None:
        """The room ended here: its owner key goes (if still ours)."""
        key = self._room_key(account, name)
        self.owned_rooms.discard(key)
        await self._release_if(keys=[key], args=[self.worker_id])

    async def room_owner(self, account: str, name: str) -> str | None:
        """The worker holding room ``name`` of ``account``, None when no one does."""
        value = await self.redis.get(self._room_key(account, name))
        return str(value) if value else None

    async def rooms(self, account: str, limit: int = 1000) -> list[str]:
        """The names of ``account``'s rooms held by any worker (at most ``limit``)."""
        prefix = self._room_key(account, "")
        names: list[str] = []
        async for key in self.redis.scan_iter(match=_glob_escape(prefix) + "*", count=200):
            names.append(str(key)[len(prefix) :])
            if len(names) >= limit:
                break
        return sorted(names)
    async def owners(self, uids: list[str]) -> list[str | None]:
        """:meth:`owner` of each call, in one round trip."""
        values = await self.redis.mget([self._k("call", u) for u in uids])
        return [str(v) if v else None for v in values]

    # --- control ----------------------------------------------------------------------

    async def forward(
        self, worker_id: str, payload: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Run ``payload`` on worker ``worker_id`` (its :attr:`on_control`) and return its
        answer; :class:`ControlTimeout` when none comes within ``timeout`` seconds."""
        reply = self._k("reply", uuid.uuid4().hex)
        await self.redis.xadd(
            self._k("ctl", worker_id),
            {"reply": reply, "payload": json.dumps(payload)},
            maxlen=10000,
            approximate=True,
        )
        answer = await self._blocking.blpop([reply], timeout=math.ceil(timeout))
        if answer is None:
            raise ControlTimeout(f"worker {worker_id} did not answer within {timeout} s")
        result: dict[str, Any] = json.loads(answer[1])
        return result

    async def _control_loop(self) -> None:
        """Read this worker's control stream from now on; each request runs in its own task."""
        stream = self._k("ctl", self.worker_id)
        last = "$"
        while not self._closed:
            try:
                got = await self._blocking.xread({stream: last}, block=1000, count=100)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("control stream read failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    asyncio.get_running_loop().create_task(self._run_control(fields))

    async def _run_control(self, fields: dict[str, str]) -> None:
        reply = fields.get("reply", "")
        try:
            payload = json.loads(fields.get("payload", "{}"))
            if self.on_control is None:
                raise RuntimeError("this worker takes no control requests")
            answer = await self.on_control(payload)
        except Exception as exc:
            log.exception("forwarded control request failed")
            answer = {"error": str(exc)}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply, json.dumps(answer))
            pipe.expire(reply, 60)
            await pipe.execute()


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RequestQueue:
    """Call requests on a Redis stream read by a consumer group: a request a worker read
    and did not acknowledge (it died) is taken by another worker once idle for ``lease_s``.
    """

    def __init__(self, cluster: Cluster, name: str = "requests", group: str = "workers") -> None:
        self.cluster = cluster
        self.stream = cluster._k("queue", name)
        self.index = cluster._k("queued", name)  #: hash: call/request uuid -> waiting request
        self.group = group

    async def create(self) -> None:
        import redis.exceptions

        try:
            await self.cluster.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def put(self, request: dict[str, Any], keys: Iterable[str] = ()) -> str:
        """Queue one request (JSON values); its stream entry id. ``keys`` (call and request
        uuids) find it while it waits (:meth:`waiting`, :meth:`lookup`)."""
        text = json.dumps(request)
        async with self.cluster.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.hset(self.index, key, text)
            pipe.xadd(self.stream, {"request": text})
            answers = await pipe.execute()
        return str(answers[-1])

    async def waiting(self, keys: list[str]) -> list[bool]:
        """Whether each key names a request still waiting (not :meth:`forget` yet)."""
        values = await self.cluster.redis.hmget(self.index, keys)
        return [v is not None for v in values]

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """The waiting request a key names, None when there is none."""
        text = await self.cluster.redis.hget(self.index, key)
        return json.loads(text) if text else None

    async def forget(self, keys: Iterable[str]) -> None:
        """A request is taken (or over): its keys no longer find it."""
        keys = list(keys)
        if keys:
            await self.cluster.redis.hdel(self.index, *keys)

    async def get(self, count: int = 10, block_ms: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` requests for this worker: first those a dead worker left pending
        (``XAUTOCLAIM`` of entries idle longer than the lease), then new ones."""
        c = self.cluster
        claimed = await c.redis.xautoclaim(
            self.stream,
            self.group,
            c.worker_id,
            min_idle_time=int(c.lease_s * 1000),
            start_id="0-0",
            count=count,
        )
        entries = list(claimed[1]) if claimed else []
        if not entries:
            got = await c._blocking.xreadgroup(
                self.group, c.worker_id, {self.stream: ">"}, count=count, block=block_ms
            )
            for _, stream_entries in got or []:
                entries.extend(stream_entries)
        return [(entry_id, json.loads(fields["request"])) for entry_id, fields in entries if fields]

    async def ack(self, entry_id: str) -> None:
        """The request is taken (the call exists on this worker): no one else gets it."""
        async with self.cluster.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def give_back(self, entry_id: str, request: dict[str, Any]) -> str:
        """A request read by a worker that has no room for it after all: back on the stream
        (as a new entry) for another worker, in one transaction."""
        async with self.cluster.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream, {"request": json.dumps(request)})
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            answers = await pipe.execute()
        return str(answers[0])

    async def pending(self) -> int:
        """Requests read by some worker and not acknowledged yet."""
        info = await self.cluster.redis.xpending(self.stream, self.group)
        return int(info["pending"]) if info else 0
