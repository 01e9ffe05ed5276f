#!/usr/bin/env python3
"""End-to-end client flow against a Matrix homeserver, driven by matrix-nio (with E2EE).

Usage: flow_nio.py --base http://127.0.0.1:PORT

Two fresh users A and B (random suffix) walk through registration, rooms, messaging,
relations, ephemeral events, account data, directories, device keys and an encrypted
room. Every step prints `OK <step>` or `FAIL <step>: <reason>` (with the HTTP status and
errcode of the last failing request where there was one); a step whose prerequisite
failed prints `SKIP`. Exit status is non-zero if any step failed or was skipped.
All waits are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from urllib.parse import quote

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinedRoomsResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    PresenceGetResponse,
    ProfileGetResponse,

    ReceiptEvent,
    RedactionEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomPreset,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
    TagEvent,
    TypingNoticeEvent,
    UnknownAccountDataEvent,
    UploadFilterResponse,
)
from nio.api import RelationshipType
from nio.responses import PublicRoomsResponse

PASSWORD = "flow-password-Gx7!"
WAIT = 25.0  # seconds: upper bound for any "wait until the other side sees it"


class StepFailed(Exception):
    pass


class Client(AsyncClient):
    """AsyncClient that remembers the last non-2xx HTTP answer, for failure reports."""

    last_error: str | None = None

    async def send(self, method, path, data=None, headers=None, trace_context=None, timeout=None):
        resp = await super().send(method, path, data, headers, trace_context, timeout)
        if resp.status >= 400:
            try:
                body = (await resp.read()).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001
                body = ""
            p = path.split("?")[0]
            self.last_error = f"HTTP {resp.status} on {method} {p}: {body[:300]}"
        return resp


def config() -> AsyncClientConfig:
    return AsyncClientConfig(
        encryption_enabled=True,
        store_sync_tokens=True,
        max_timeouts=2,
        max_limit_exceeded=3,
        request_timeout=30,
    )


class User:
    def __init__(self, name: str, base: str, suffix: str, store_dir: str):
        self.name = name
        self.base = base
        self.localpart = f"flow{name.lower()}{suffix}"
        self.store_dir = store_dir
        self.client: Client | None = None
        self.user_id: str | None = None
        self.syncs: list[SyncResponse] = []

    @property
    def c(self) -> Client:
        if self.client is None:
            raise StepFailed(f"user {self.name} has no logged-in client")
        return self.client

    # ---- helpers -----------------------------------------------------------------
    def err(self, resp) -> str:
        msg = str(resp)
        if self.client is not None and self.client.last_error:
            msg += f" [{self.client.last_error}]"
        return msg

    def expect(self, resp, cls, what: str):
        if not isinstance(resp, cls):
            raise StepFailed(f"{what}: {self.err(resp)}")
        return resp

    async def raw(self, method: str, path: str, body=None, auth: bool = True, client=None):
        """Plain HTTP through the client's own session; returns (status, json)."""
        cl = client or self.c
        headers = {"Content-Type": "application/json"}
        if auth and cl.access_token:
            headers["Authorization"] = f"Bearer {cl.access_token}"
        data = json.dumps(body) if body is not None else None
        resp = await cl.send(method, path, data, headers)
        text = (await resp.read()).decode("utf-8", "replace")
        try:
            js = json.loads(text) if text else {}
        except ValueError:
            js = {"_raw": text[:300]}
        return resp.status, js

    async def raw_ok(self, method: str, path: str, body=None):
        status, js = await self.raw(method, path, body)
        if status != 200:
            raise StepFailed(f"HTTP {status} on {method} {path}: {json.dumps(js)[:300]}")
        return js

    async def maintain_keys(self):
        c = self.c
        if not c.olm:
            return
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            await c.keys_query()
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()

    async def sync_once(self, timeout_ms: int = 1500, sync_filter=None) -> SyncResponse:
        resp = await self.c.sync(timeout=timeout_ms, sync_filter=sync_filter)
        if not isinstance(resp, SyncResponse):
            raise StepFailed(f"sync failed: {self.err(resp)}")
        self.syncs.append(resp)
        await self.maintain_keys()
        return resp

    async def wait_for(self, pred, what: str, timeout: float = WAIT, scan_old: bool = True):
        """Sync until pred(sync_response) returns a truthy value (bounded)."""
        if scan_old:
            for s in self.syncs:
                r = pred(s)
                if r:
                    return r
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = await self.sync_once()
            r = pred(s)
            if r:
                return r
        raise StepFailed(f"{self.name} did not see {what} within {timeout:.0f}s")


# ---- predicates over sync responses ------------------------------------------------
def timeline(s: SyncResponse, room_id: str):
    room = s.rooms.join.get(room_id)
    return room.timeline.events if room else []


def find_event(room_id: str, fn):
    def pred(s: SyncResponse):
        for ev in timeline(s, room_id):
            try:
                if fn(ev):
                    return ev
            except (KeyError, AttributeError, TypeError):
                continue
        return None

    return pred


def by_id(room_id: str, event_id: str):
    return find_event(room_id, lambda ev: ev.event_id == event_id)


async def collect(u: "User", agen, what: str) -> list:
    """Drain one of nio's paginating async generators, turning its error responses into StepFailed."""
    out = []
    try:
        async for ev in agen:
            out.append(ev)
    except AttributeError:
        # nio reads .next_batch off the error response it got
        raise StepFailed(f"{what}: {u.c.last_error or 'error response'}") from None
    return out


def rel(ev) -> dict:
    return ev.source.get("content", {}).get("m.relates_to", {}) or {}


# ---- the flow ---------------------------------------------------------------------
class Flow:
    def __init__(self, base: str, base_b: str | None = None):
        self.base = base.rstrip("/")
        # With a second server, B lives there and the flow checks what crosses federation.
        self.base_b = base_b.rstrip("/") if base_b else None
        self.suffix = secrets.token_hex(4)
        self.tmp = tempfile.mkdtemp(prefix="nio-flow-")
        self.a = User("A", self.base, self.suffix, f"{self.tmp}/a")
        self.b = User("B", self.base_b or self.base, self.suffix, f"{self.tmp}/b")
        self.results: list[tuple[str, str, str]] = []
        self.s: dict = {}  # shared state between steps
        self.extra_clients: list[AsyncClient] = []

    async def step(self, name: str, fn, needs: tuple[str, ...] = ()):
        failed = [n for n in needs if not any(r[0] == n and r[1] == "OK" for r in self.results)]
        if failed:
            roots = [n for n in failed if any(r[0] == n and r[1] == "FAIL" for r in self.results)]
            why = f"prerequisite failed: {', '.join(roots or failed)}"
            self.results.append((name, "SKIP", why))
            print(f"SKIP {name}: {why}", flush=True)
            return
        for u in (self.a, self.b):
            if u.client is not None:
                u.client.last_error = None
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(fn(), timeout=120)
            self.results.append((name, "OK", ""))
            print(f"OK   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except StepFailed as e:
            self.results.append((name, "FAIL", str(e)))
            print(f"FAIL {name}: {e}", flush=True)
        except asyncio.TimeoutError:
            self.results.append((name, "FAIL", "step timed out after 120s"))
            print(f"FAIL {name}: step timed out after 120s", flush=True)
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
            extra = ""
            for u in (self.a, self.b):
                if u.client is not None and u.client.last_error:
                    extra += f" [{u.name}: {u.client.last_error}]"
            self.results.append((name, "FAIL", f"{type(e).__name__}: {e}{extra}"))
            print(f"FAIL {name}: {type(e).__name__}: {e} ({tb}){extra}", flush=True)

    # -- registration / login -------------------------------------------------------
    async def register(self, u: User):
        c = Client(u.base, config=AsyncClientConfig(max_timeouts=2, max_limit_exceeded=3, request_timeout=30))
        self.extra_clients.append(c)
        try:
            # UIA: first call without auth -> 401 with flows and a session.
            status, js = await u.raw(
                "POST", "/_matrix/client/v3/register",
                {"username": u.localpart, "password": PASSWORD}, auth=False, client=c,
            )
            if status != 401:
                raise StepFailed(f"register without auth: expected 401 UIA, got HTTP {status}: {json.dumps(js)[:300]}")
            flows = [f.get("stages", []) for f in js.get("flows", [])]
            if ["m.login.dummy"] not in flows:
                raise StepFailed(f"no m.login.dummy flow offered: {flows}")
            session = js.get("session")
            if not session:
                raise StepFailed("UIA 401 carried no session")
            resp = await c.register(u.localpart, PASSWORD, device_name="nio register", session_token=session)
            if not isinstance(resp, RegisterResponse):
                raise StepFailed(f"register with m.login.dummy: {resp} [{c.last_error}]")
            if not resp.user_id.startswith(f"@{u.localpart}:"):
                raise StepFailed(f"unexpected user_id {resp.user_id}")
            if not resp.access_token:
                raise StepFailed("register returned no access_token")
            u.user_id = resp.user_id
        finally:
            await c.close()

    async def login(self, u: User):
        import os

        os.makedirs(u.store_dir, exist_ok=True)
        c = Client(u.base, u.user_id, store_path=u.store_dir, config=config())
        u.client = c
        resp = await c.login(PASSWORD, device_name=f"nio flow {u.name}")
        u.expect(resp, LoginResponse, "login with m.login.password")
        if resp.user_id != u.user_id:
            raise StepFailed(f"login user_id {resp.user_id} != {u.user_id}")
        if c.olm is None:
            raise StepFailed("nio olm machine not loaded after login (store problem?)")
        who = await u.raw_ok("GET", "/_matrix/client/v3/account/whoami")
        if who.get("user_id") != u.user_id or who.get("device_id") != c.device_id:
            raise StepFailed(f"whoami mismatch: {who}")
        await u.sync_once(timeout_ms=0)

    # -- profile --------------------------------------------------------------------
    async def profile(self):
        server = self.a.user_id.split(":", 1)[1]
        for u in (self.a, self.b):
            dn = f"Flow {u.name} {self.suffix}"
            av = f"mxc://{server}/avatar{u.name}{self.suffix}"
            r = await u.c.set_displayname(dn)
            if isinstance(r, ErrorResponse):
                raise StepFailed(f"set displayname: {u.err(r)}")
            r = await u.c.set_avatar(av)
            if isinstance(r, ErrorResponse):
                raise StepFailed(f"set avatar_url: {u.err(r)}")
        p = self.b.expect(await self.b.c.get_profile(self.a.user_id), ProfileGetResponse, "B get A's profile")
        if p.displayname != f"Flow A {self.suffix}":
            raise StepFailed(f"A displayname seen by B = {p.displayname!r}")
        if p.avatar_url != f"mxc://{server}/avatarA{self.suffix}":
            raise StepFailed(f"A avatar_url seen by B = {p.avatar_url!r}")

    # -- device keys ----------------------------------------------------------------
    async def keys_upload(self):
        for u in (self.a, self.b):
            c = u.c
            if c.should_upload_keys:
                r = u.expect(await c.keys_upload(), KeysUploadResponse, f"{u.name} keys/upload")
                if r.signed_curve25519_count <= 0:
                    raise StepFailed(f"{u.name} keys/upload: signed_curve25519 count {r.signed_curve25519_count}")
            if c.should_upload_keys:
                raise StepFailed(f"{u.name}: nio still wants to upload keys after keys/upload")
            js = await u.raw_ok("POST", "/_matrix/client/v3/keys/upload", {})
            cnt = js.get("one_time_key_counts", {}).get("signed_curve25519", 0)
            if cnt <= 0:
                raise StepFailed(f"{u.name}: one_time_key_counts after upload = {js}")

    async def keys_query(self):
        a, b = self.a, self.b
        js = await a.raw_ok("POST", "/_matrix/client/v3/keys/query", {"device_keys": {b.user_id: []}})
        devs = js.get("device_keys", {}).get(b.user_id, {})
        dev = devs.get(b.c.device_id)
        if not dev:
            raise StepFailed(f"B's device {b.c.device_id} not in keys/query answer: {list(devs)}")
        ident = b.c.olm.account.identity_keys
        keys = dev.get("keys", {})
        if keys.get(f"curve25519:{b.c.device_id}") != ident["curve25519"]:
            raise StepFailed("B's curve25519 key from keys/query differs from B's olm account")
        if keys.get(f"ed25519:{b.c.device_id}") != ident["ed25519"]:
            raise StepFailed("B's ed25519 key from keys/query differs from B's olm account")
        if not dev.get("signatures", {}).get(b.user_id, {}).get(f"ed25519:{b.c.device_id}"):
            raise StepFailed("B's device keys carry no self-signature")
        # The reverse direction through nio's own tracking machinery happens in the E2EE step.

    # -- room basics ----------------------------------------------------------------
    async def create_room(self):
        a = self.a
        r = a.expect(
            await a.c.room_create(
                name=f"Flow room {self.suffix}",
                topic=f"Topic {self.suffix}",
                preset=RoomPreset.private_chat,
            ),
            RoomCreateResponse,
            "createRoom",
        )
        self.s["room"] = r.room_id
        st = a.expect(await a.c.room_get_state(r.room_id), RoomGetStateResponse, "get room state")
        types = {(e["type"], e.get("state_key")): e for e in st.events}
        if types.get(("m.room.name", ""), {}).get("content", {}).get("name") != f"Flow room {self.suffix}":
            raise StepFailed("m.room.name missing or wrong in room state")
        if types.get(("m.room.topic", ""), {}).get("content", {}).get("topic") != f"Topic {self.suffix}":
            raise StepFailed("m.room.topic missing or wrong in room state")
        jr = types.get(("m.room.join_rules", ""), {}).get("content", {}).get("join_rule")
        if jr != "invite":
            raise StepFailed(f"private_chat preset gave join_rule {jr!r}")
        await a.sync_once(timeout_ms=0)

    async def invite_and_join(self, room_key: str = "room"):
        a, b = self.a, self.b
        rid = self.s[room_key]
        r = await a.c.room_invite(rid, b.user_id)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"invite: {a.err(r)}")
        await b.wait_for(lambda s: rid in s.rooms.invite, f"invite to {rid} in sync")
        r = await b.c.join(rid)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"join: {b.err(r)}")
        await b.wait_for(lambda s: rid in s.rooms.join, f"{rid} under rooms.join")

        def b_joined(s):
            for ev in timeline(s, rid):
                if isinstance(ev, RoomMemberEvent) and ev.state_key == b.user_id and ev.membership == "join":
                    return ev
            return None

        await a.wait_for(b_joined, "B's join membership event")

    async def join_check_profile(self):
        # B's view of A's membership event carries the displayname set before room creation.
        rid = self.s["room"]
        b = self.b
        room = b.c.rooms.get(rid)
        if room is None:
            raise StepFailed("nio has no room object for the joined room")
        name = room.user_name(self.a.user_id)
        if name != f"Flow A {self.suffix}":
            raise StepFailed(f"A's member displayname in room state as seen by B: {name!r}")

    async def send_text(self, u: User, rid: str, body: str, extra: dict | None = None, ignore_unverified=False):
        content = {"msgtype": "m.text", "body": body}
        if extra:
            content.update(extra)
        r = await u.c.room_send(rid, "m.room.message", content, ignore_unverified_devices=ignore_unverified)
        u.expect(r, RoomSendResponse, f"{u.name} send message")
        return r.event_id

    async def messages(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        ea = await self.send_text(a, rid, f"hello from A {self.suffix}")
        ev = await b.wait_for(by_id(rid, ea), "A's message")
        if not isinstance(ev, RoomMessageText) or ev.body != f"hello from A {self.suffix}" or ev.sender != a.user_id:
            raise StepFailed(f"B got A's message as {ev!r}")
        eb = await self.send_text(b, rid, f"hello from B {self.suffix}")
        ev = await a.wait_for(by_id(rid, eb), "B's message")
        if not isinstance(ev, RoomMessageText) or ev.body != f"hello from B {self.suffix}":
            raise StepFailed(f"A got B's message as {ev!r}")
        self.s["msg_a"], self.s["msg_b"] = ea, eb

    async def reply(self):
        a, b = self.a, self.b
        rid, target = self.s["room"], self.s["msg_a"]
        er = await self.send_text(
            b, rid, f"> <{a.user_id}> hello\n\nreply {self.suffix}",
            {"m.relates_to": {"m.in_reply_to": {"event_id": target}}},
        )
        ev = await a.wait_for(by_id(rid, er), "B's reply")
        if rel(ev).get("m.in_reply_to", {}).get("event_id") != target:
            raise StepFailed(f"reply arrived without m.in_reply_to -> {target}: {rel(ev)}")

    async def edit(self):
        a, b = self.a, self.b
        rid, target = self.s["room"], self.s["msg_a"]
        new = f"hello from A (edited) {self.suffix}"
        ee = await self.send_text(
            a, rid, f"* {new}",
            {"m.new_content": {"msgtype": "m.text", "body": new},
             "m.relates_to": {"rel_type": "m.replace", "event_id": target}},
        )
        ev = await b.wait_for(by_id(rid, ee), "A's edit")
        r = rel(ev)
        if r.get("rel_type") != "m.replace" or r.get("event_id") != target:
            raise StepFailed(f"edit arrived with m.relates_to {r}")
        if ev.source["content"].get("m.new_content", {}).get("body") != new:
            raise StepFailed("edit arrived without m.new_content")
        ids = [e.event_id for e in await collect(
            b, b.c.room_get_event_relations(rid, target, RelationshipType.replacement), "/relations m.replace")]
        if ee not in ids:
            raise StepFailed(f"/relations/{target}/m.replace does not list the edit: {ids}")

    async def reaction(self):
        a, b = self.a, self.b
        rid, target = self.s["room"], self.s["msg_a"]
        r = await b.c.room_send(
            rid, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}}
        )
        b.expect(r, RoomSendResponse, "send m.reaction")
        rx = r.event_id
        ev = await a.wait_for(by_id(rid, rx), "B's reaction")
        if rel(ev).get("key") != "👍":
            raise StepFailed(f"reaction arrived with m.relates_to {rel(ev)}")
        evs = await collect(a, a.c.room_get_event_relations(rid, target, RelationshipType.annotation),
                            "/relations m.annotation")
        if rx not in [e.event_id for e in evs]:
            raise StepFailed(f"/relations/{target}/m.annotation does not list the reaction {rx}: "
                             f"{[e.event_id for e in evs]}")
        evs = await collect(a, a.c.room_get_event_relations(rid, target, RelationshipType.annotation, "m.reaction"),
                            "/relations m.annotation/m.reaction")
        if rx not in [e.event_id for e in evs]:
            raise StepFailed("/relations/{id}/m.annotation/m.reaction does not list the reaction")
        allrel = [e.event_id for e in await collect(a, a.c.room_get_event_relations(rid, target), "/relations")]
        if rx not in allrel:
            raise StepFailed("/relations/{id} (no rel_type) does not list the reaction")

    async def thread(self):
        a, b = self.a, self.b
        rid, root = self.s["room"], self.s["msg_b"]
        et = await self.send_text(
            a, rid, f"thread reply {self.suffix}",
            {"m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
                              "m.in_reply_to": {"event_id": root}}},
        )
        ev = await b.wait_for(by_id(rid, et), "A's thread reply")
        if rel(ev).get("rel_type") != "m.thread" or rel(ev).get("event_id") != root:
            raise StepFailed(f"thread reply arrived with {rel(ev)}")
        ids = [e.event_id for e in await collect(
            b, b.c.room_get_event_relations(rid, root, RelationshipType.thread), "/relations m.thread")]
        if et not in ids:
            raise StepFailed(f"/relations/{root}/m.thread does not list the thread reply: {ids}")
        roots = [e.event_id for e in await collect(b, b.c.room_get_threads(rid), "/threads")]
        if root not in roots:
            raise StepFailed(f"/threads does not list the thread root {root}: {roots}")

    async def redaction(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        victim = await self.send_text(b, rid, f"to be redacted {self.suffix}")
        await a.wait_for(by_id(rid, victim), "message to be redacted")
        r = await b.c.room_redact(rid, victim, reason="flow test")
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"redact: {b.err(r)}")

        def saw(s):
            for ev in timeline(s, rid):
                if isinstance(ev, RedactionEvent) and ev.redacts == victim:
                    return ev
            return None

        await a.wait_for(saw, "m.room.redaction for the message")
        g = a.expect(await a.c.room_get_event(rid, victim), RoomGetEventResponse, "GET redacted event")
        content = g.event.source.get("content", {})
        if content.get("body"):
            raise StepFailed(f"redacted event still has content: {content}")

    async def typing(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        r = await a.c.room_typing(rid, True, 20000)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"typing: {a.err(r)}")

        def pred(s):
            room = s.rooms.join.get(rid)
            for ev in room.ephemeral if room else []:
                if isinstance(ev, TypingNoticeEvent) and a.user_id in ev.users:
                    return ev
            return None

        await b.wait_for(pred, "A typing", scan_old=False)
        r = await a.c.room_typing(rid, False)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"typing stop: {a.err(r)}")

        def stopped(s):
            room = s.rooms.join.get(rid)
            for ev in room.ephemeral if room else []:
                if isinstance(ev, TypingNoticeEvent) and a.user_id not in ev.users:
                    return ev
            return None

        await b.wait_for(stopped, "A stopped typing", scan_old=False)

    async def receipt(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        # A receipt going backwards may be ignored: read a fresh message, as a client would.
        target = await self.send_text(a, rid, f"read me {self.suffix}")
        await b.wait_for(by_id(rid, target), "message to mark read")
        r = await b.c.update_receipt_marker(rid, target)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"receipt: {b.err(r)}")

        def pred(s):
            room = s.rooms.join.get(rid)
            for ev in room.ephemeral if room else []:
                if isinstance(ev, ReceiptEvent):
                    for rc in ev.receipts:
                        if rc.user_id == b.user_id and rc.event_id == target and rc.receipt_type == "m.read":
                            return rc
            return None

        await a.wait_for(pred, "B's m.read receipt", scan_old=False)
        r = await b.c.room_read_markers(rid, fully_read_event=target, read_event=target)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"read_markers: {b.err(r)}")

    async def presence(self):
        a, b = self.a, self.b
        msg = f"flow status {self.suffix}"
        r = await a.c.set_presence("online", msg)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"set presence: {a.err(r)}")

        def pred(s):
            for ev in s.presence_events:
                if ev.user_id == a.user_id and ev.presence == "online" and ev.status_msg == msg:
                    return ev
            return None

        await b.wait_for(pred, "A's presence (online + status_msg) in sync", scan_old=False)
        g = b.expect(await b.c.get_presence(a.user_id), PresenceGetResponse, "GET A's presence")
        if g.presence != "online" or g.status_msg != msg:
            raise StepFailed(f"GET presence: {g.presence!r} {g.status_msg!r}")

    async def account_data(self):
        a = self.a
        rid = self.s["room"]
        uid = quote(a.user_id, safe="")
        qr = quote(rid, safe="")
        await a.raw_ok("PUT", f"/_matrix/client/v3/user/{uid}/account_data/org.ganglion.flow", {"n": self.suffix})
        await a.raw_ok("PUT", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/account_data/org.ganglion.flow.room",
                       {"r": self.suffix})
        await a.raw_ok("PUT", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/tags/u.work", {"order": 0.5})
        await a.raw_ok("PUT", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/tags/m.favourite", {})
        g = await a.raw_ok("GET", f"/_matrix/client/v3/user/{uid}/account_data/org.ganglion.flow")
        if g != {"n": self.suffix}:
            raise StepFailed(f"GET global account data: {g}")
        g = await a.raw_ok("GET", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/account_data/org.ganglion.flow.room")
        if g != {"r": self.suffix}:
            raise StepFailed(f"GET room account data: {g}")
        g = await a.raw_ok("GET", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/tags")
        tags = g.get("tags", {})
        if set(tags) != {"u.work", "m.favourite"} or tags["u.work"].get("order") != 0.5:
            raise StepFailed(f"GET tags: {g}")

        await a.wait_for(
            lambda s: any(isinstance(e, UnknownAccountDataEvent) and e.type == "org.ganglion.flow"
                          and e.content.get("n") == self.suffix for e in s.account_data_events),
            "global account data in sync")

        def room_ad(s):
            room = s.rooms.join.get(rid)
            return room and any(isinstance(e, UnknownAccountDataEvent) and e.type == "org.ganglion.flow.room"
                                for e in room.account_data)

        await a.wait_for(room_ad, "room account data in sync")

        def tag_ev(s):
            room = s.rooms.join.get(rid)
            for e in room.account_data if room else []:
                if isinstance(e, TagEvent) and "u.work" in e.tags and "m.favourite" in e.tags:
                    return e
            return None

        await a.wait_for(tag_ev, "m.tag with u.work and m.favourite in sync")
        await a.raw_ok("DELETE", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/tags/u.work")
        g = await a.raw_ok("GET", f"/_matrix/client/v3/user/{uid}/rooms/{qr}/tags")
        if set(g.get("tags", {})) != {"m.favourite"}:
            raise StepFailed(f"tags after DELETE u.work: {g}")

    async def filter(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        r = b.expect(
            await b.c.upload_filter(
                room={"timeline": {"limit": 3, "types": ["m.room.message"]}, "ephemeral": {"not_types": ["*"]}},
                presence={"not_types": ["*"]},
            ),
            UploadFilterResponse,
            "upload filter",
        )
        fid = r.filter_id
        got = await b.raw_ok("GET", f"/_matrix/client/v3/user/{quote(b.user_id, safe='')}/filter/{quote(fid, safe='')}")
        if got.get("room", {}).get("timeline", {}).get("limit") != 3:
            raise StepFailed(f"GET filter returned {got}")
        marker = await self.send_text(a, rid, f"filtered {self.suffix}")
        # A fresh (token-less) sync on a second client of B's device, with the filter.
        c2 = Client(b.base, b.user_id, config=AsyncClientConfig(max_timeouts=2, request_timeout=30))
        self.extra_clients.append(c2)
        c2.restore_login(b.user_id, b.c.device_id, b.c.access_token)
        s = await c2.sync(timeout=0, sync_filter=fid)
        if not isinstance(s, SyncResponse):
            raise StepFailed(f"sync with filter: {s} [{c2.last_error}]")
        room = s.rooms.join.get(rid)
        if room is None:
            raise StepFailed("filtered sync lacks the room")
        evs = room.timeline.events
        types = {e.source.get("type") for e in evs}
        if types - {"m.room.message"}:
            raise StepFailed(f"filtered timeline contains other types: {types}")
        if len(evs) > 3:
            raise StepFailed(f"filtered timeline has {len(evs)} events > limit 3")
        if marker not in [e.event_id for e in evs]:
            raise StepFailed("filtered timeline lacks the latest message")
        if not room.timeline.limited:
            raise StepFailed("filtered timeline not marked limited although older messages exist")
        if s.presence_events:
            raise StepFailed("presence events delivered despite presence not_types [*]")
        # and an inline filter JSON
        s = await c2.sync(timeout=0, sync_filter={"room": {"rooms": [rid], "timeline": {"limit": 1}}})
        if not isinstance(s, SyncResponse):
            raise StepFailed(f"sync with inline filter: {s} [{c2.last_error}]")
        await c2.close()
        await b.wait_for(by_id(rid, marker), "filtered marker on main client")

    async def create_public(self):
        a = self.a
        r = a.expect(
            await a.c.room_create(name=f"Flow lobby {self.suffix}", topic=f"Public lobby {self.suffix}",
                                  preset=RoomPreset.public_chat),
            RoomCreateResponse, "create public room")
        self.s["pub"] = r.room_id
        jr = a.expect(await a.c.room_get_state_event(r.room_id, "m.room.join_rules"), RoomGetStateEventResponse,
                      "GET state m.room.join_rules")
        if jr.content.get("join_rule") != "public":
            raise StepFailed(f"public_chat preset gave join_rule {jr.content.get('join_rule')!r}")

    async def directory(self):
        a, b = self.a, self.b
        rid = self.s["pub"]
        await a.raw_ok("PUT", f"/_matrix/client/v3/directory/list/room/{quote(rid, safe='')}", {"visibility": "public"})
        vis = await a.c.room_get_visibility(rid)
        if getattr(vis, "visibility", None) != "public":
            raise StepFailed(f"GET directory/list/room -> {vis} {a.c.last_error or ''}")
        deadline = time.monotonic() + WAIT
        last = None
        while time.monotonic() < deadline:
            lst = await b.c.list_public_rooms(limit=100)
            srch = await b.c.list_public_rooms(filter_generic_search_term=f"lobby {self.suffix}")
            last = (lst, srch)
            if (isinstance(lst, PublicRoomsResponse) and isinstance(srch, PublicRoomsResponse)
                    and rid in [x.room_id for x in lst.public_rooms]
                    and [x.room_id for x in srch.public_rooms] == [rid]):
                pr = next(x for x in srch.public_rooms if x.room_id == rid)
                if pr.name != f"Flow lobby {self.suffix}" or pr.num_joined_members != 1:
                    raise StepFailed(f"public room entry: {pr}")
                break
            await asyncio.sleep(1)
        else:
            raise StepFailed(f"public room not listed/searchable: {last} {b.c.last_error or ''}")

    async def alias(self):
        a, b = self.a, self.b
        rid = self.s["pub"]
        server = a.user_id.split(":", 1)[1]
        al = f"#flow-{self.suffix}:{server}"
        r = await a.c.room_put_alias(al, rid)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"PUT alias: {a.err(r)}")
        r = b.expect(await b.c.room_resolve_alias(al), RoomResolveAliasResponse, "resolve alias")
        if r.room_id != rid:
            raise StepFailed(f"alias resolved to {r.room_id}, expected {rid}")
        if server not in r.servers:
            raise StepFailed(f"alias servers {r.servers} lack {server}")
        # joining through the alias
        j = await b.c.join(al)
        if isinstance(j, ErrorResponse):
            raise StepFailed(f"join by alias: {b.err(j)}")
        if j.room_id != rid:
            raise StepFailed(f"join by alias gave {j.room_id}")
        st, js = await a.raw("GET", f"/_matrix/client/v3/rooms/{quote(rid, safe='')}/aliases")
        if st != 200 or al not in js.get("aliases", []):
            raise StepFailed(f"GET rooms/{{id}}/aliases: HTTP {st} {js}")

    async def user_directory(self):
        a, b = self.a, self.b
        deadline = time.monotonic() + WAIT
        last = None
        while time.monotonic() < deadline:
            st, js = await a.raw("POST", "/_matrix/client/v3/user_directory/search",
                                 {"search_term": b.localpart, "limit": 10})
            last = (st, js)
            if st == 200:
                hits = {r.get("user_id"): r for r in js.get("results", [])}
                if b.user_id in hits:
                    if hits[b.user_id].get("display_name") != f"Flow B {self.suffix}":
                        raise StepFailed(f"user directory entry: {hits[b.user_id]}")
                    break
            await asyncio.sleep(1)
        else:
            raise StepFailed(f"user_directory/search did not find B: {last}")
        st, js = await a.raw("POST", "/_matrix/client/v3/user_directory/search",
                             {"search_term": f"Flow B {self.suffix}"})
        if st != 200 or b.user_id not in [r.get("user_id") for r in js.get("results", [])]:
            raise StepFailed(f"search by display name did not find B: HTTP {st} {js}")

    async def e2ee(self):
        a, b = self.a, self.b
        r = a.expect(
            await a.c.room_create(
                name=f"Flow secret {self.suffix}", preset=RoomPreset.private_chat,
                initial_state=[{"type": "m.room.encryption", "state_key": "",
                                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            ),
            RoomCreateResponse, "create encrypted room")
        rid = r.room_id
        self.s["enc"] = rid
        await a.sync_once(timeout_ms=0)
        await self.invite_and_join("enc")
        if not a.c.rooms[rid].encrypted or not b.c.rooms[rid].encrypted:
            raise StepFailed("nio does not consider the room encrypted")
        body = f"secret from A {self.suffix}"
        r = await a.c.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": body},
                                ignore_unverified_devices=True)
        a.expect(r, RoomSendResponse, "send encrypted message")
        eid = r.event_id
        raw = await a.raw_ok("GET", f"/_matrix/client/v3/rooms/{quote(rid, safe='')}/event/{quote(eid, safe='')}")
        if raw.get("type") != "m.room.encrypted" or raw.get("content", {}).get("algorithm") != "m.megolm.v1.aes-sha2":
            raise StepFailed(f"event was stored as {raw.get('type')}, not m.room.encrypted/megolm")

        def decrypted(s):
            for ev in timeline(s, rid):
                if ev.event_id == eid:
                    return ev
            return None

        deadline = time.monotonic() + WAIT
        ev = None
        while time.monotonic() < deadline:
            ev = await b.wait_for(decrypted, "A's encrypted event", timeout=max(1, deadline - time.monotonic()))
            if isinstance(ev, RoomMessageText):
                break
            # Still a MegolmEvent: the room key may arrive in a later to-device batch; retry decrypting.
            await b.sync_once()
            try:
                ev2 = b.c.decrypt_event(ev)
                if isinstance(ev2, RoomMessageText):
                    ev = ev2
                    break
            except Exception:  # noqa: BLE001
                pass
        if not isinstance(ev, RoomMessageText):
            raise StepFailed(f"B could not decrypt A's message: {type(ev).__name__}")
        if ev.body != body or not ev.decrypted:
            raise StepFailed(f"B decrypted {ev.body!r} (decrypted={ev.decrypted})")
        # and back: B -> A
        body2 = f"secret from B {self.suffix}"
        r = await b.c.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": body2},
                                ignore_unverified_devices=True)
        b.expect(r, RoomSendResponse, "B send encrypted message")
        eid2 = r.event_id
        ev = await a.wait_for(lambda s: next((e for e in timeline(s, rid)
                                              if e.event_id == eid2 and isinstance(e, RoomMessageText)), None),
                              "B's encrypted message decrypted")
        if ev.body != body2:
            raise StepFailed(f"A decrypted {ev.body!r}")

    async def leave_forget(self):
        a, b = self.a, self.b
        rid = self.s["room"]
        r = await b.c.room_leave(rid)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"leave: {b.err(r)}")

        def b_left(s):
            for ev in timeline(s, rid):
                if isinstance(ev, RoomMemberEvent) and ev.state_key == b.user_id and ev.membership == "leave":
                    return ev
            return None

        await a.wait_for(b_left, "B's leave", scan_old=False)
        await b.wait_for(lambda s: rid in s.rooms.leave, "room under rooms.leave", scan_old=False)
        r = await b.c.room_forget(rid)
        if isinstance(r, ErrorResponse):
            raise StepFailed(f"forget: {b.err(r)}")
        jr = b.expect(await b.c.joined_rooms(), JoinedRoomsResponse, "joined_rooms")
        if rid in jr.rooms:
            raise StepFailed("room still in B's joined_rooms after leave")
        # A fresh sync for B must not mention the forgotten room.
        c2 = Client(b.base, b.user_id, config=AsyncClientConfig(max_timeouts=2, request_timeout=30))
        self.extra_clients.append(c2)
        c2.restore_login(b.user_id, b.c.device_id, b.c.access_token)
        s = await c2.sync(timeout=0, sync_filter={"room": {"include_leave": True}})
        await c2.close()
        if not isinstance(s, SyncResponse):
            raise StepFailed(f"sync after forget: {s} [{c2.last_error}]")
        if rid in s.rooms.join or rid in s.rooms.leave or rid in s.rooms.invite:
            raise StepFailed("forgotten room still appears in a fresh sync with include_leave")

    # -- driver ---------------------------------------------------------------------
    async def run(self) -> int:
        a, b = self.a, self.b
        if self.base_b:
            print(f"# matrix-nio flow: A on {self.base}, B on {self.base_b} (suffix {self.suffix})", flush=True)
            return await self.run_federated()
        print(f"# matrix-nio flow against {self.base} (suffix {self.suffix})", flush=True)
        st = self.step
        await st("register A (UIA m.login.dummy)", lambda: self.register(a))
        await st("register B (UIA m.login.dummy)", lambda: self.register(b))
        await st("login A", lambda: self.login(a), ("register A (UIA m.login.dummy)",))
        await st("login B", lambda: self.login(b), ("register B (UIA m.login.dummy)",))
        both = ("login A", "login B")
        await st("profile displayname + avatar_url", self.profile, both)
        await st("device keys + one-time keys upload", self.keys_upload, both)
        await st("keys/query for the other user", self.keys_query, both + ("device keys + one-time keys upload",))
        await st("create room (private_chat, name, topic)", self.create_room, both)
        room = both + ("create room (private_chat, name, topic)",)
        await st("invite B, B sees invite, B joins", self.invite_and_join, room)
        joined = room + ("invite B, B sees invite, B joins",)
        await st("member displayname in room state", self.join_check_profile,
                 joined + ("profile displayname + avatar_url",))
        await st("messages both ways", self.messages, joined)
        msgs = joined + ("messages both ways",)
        await st("reply (m.in_reply_to)", self.reply, msgs)
        await st("edit (m.replace) + /relations", self.edit, msgs)
        await st("reaction (m.annotation) + /relations", self.reaction, msgs)
        await st("thread (m.thread) + /relations + /threads", self.thread, msgs)
        await st("redaction", self.redaction, msgs)
        await st("typing notification", self.typing, joined)
        await st("read receipt", self.receipt, msgs)
        await st("presence", self.presence, joined)
        await st("account data (global + room) + tags", self.account_data, room)
        await st("filter upload + filtered sync", self.filter, msgs)
        await st("create public room (public_chat)", self.create_public, both)
        pub = both + ("create public room (public_chat)",)
        await st("public room directory (publish, list, search)", self.directory, pub)
        await st("room alias create + resolve + join by alias", self.alias, pub)
        await st("user directory search", self.user_directory, joined)
        await st("encrypted room: B decrypts A (and back)", self.e2ee,
                 both + ("device keys + one-time keys upload",))
        await st("leave + forget", self.leave_forget, joined)

        return await self.finish()

    async def run_federated(self) -> int:
        """A and B on two servers: what a user does with someone on another node."""
        a, b = self.a, self.b
        st = self.step
        await st("register A (UIA m.login.dummy)", lambda: self.register(a))
        await st("register B (UIA m.login.dummy)", lambda: self.register(b))
        await st("login A", lambda: self.login(a), ("register A (UIA m.login.dummy)",))
        await st("login B", lambda: self.login(b), ("register B (UIA m.login.dummy)",))
        both = ("login A", "login B")
        await st("profile displayname + avatar_url", self.profile, both)
        await st("device keys + one-time keys upload", self.keys_upload, both)
        await st("keys/query for the other user", self.keys_query, both + ("device keys + one-time keys upload",))
        await st("create room (private_chat, name, topic)", self.create_room, both)
        room = both + ("create room (private_chat, name, topic)",)
        await st("invite B, B sees invite, B joins", self.invite_and_join, room)
        joined = room + ("invite B, B sees invite, B joins",)
        await st("member displayname in room state", self.join_check_profile,
                 joined + ("profile displayname + avatar_url",))
        await st("messages both ways", self.messages, joined)
        msgs = joined + ("messages both ways",)
        await st("reply (m.in_reply_to)", self.reply, msgs)
        await st("edit (m.replace) + /relations", self.edit, msgs)
        await st("reaction (m.annotation) + /relations", self.reaction, msgs)
        await st("redaction", self.redaction, msgs)
        await st("typing notification", self.typing, joined)
        await st("read receipt", self.receipt, msgs)
        await st("encrypted room: B decrypts A (and back)", self.e2ee,
                 both + ("device keys + one-time keys upload",))
        return await self.finish()

    async def finish(self) -> int:
        a, b = self.a, self.b
        for u in (a, b):
            if u.client is not None:
                await u.client.close()
        for c in self.extra_clients:
            await c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

        ok = sum(1 for r in self.results if r[1] == "OK")
        failed = [r for r in self.results if r[1] == "FAIL"]
        skipped = [r for r in self.results if r[1] == "SKIP"]
        for name, _status, why in failed:
            print(f"# FAILED {name}: {why}", flush=True)
        print(f"nio: {ok} passed, {len(failed)} failed, {len(skipped)} skipped", flush=True)
        return 1 if failed or skipped else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="homeserver base URL, e.g. http://127.0.0.1:8008")
    ap.add_argument("--base-b", default=None,
                    help="a second homeserver for user B: check what crosses federation")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(Flow(args.base, args.base_b).run(), timeout=900))
    except asyncio.TimeoutError:
        print("FAIL flow: overall timeout (900s)", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
