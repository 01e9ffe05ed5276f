#!/usr/bin/env node
// End-to-end client flow against a Matrix homeserver, driven by matrix-js-sdk (the SDK Element
// is built on), with its Rust crypto (WASM) for device keys and an encrypted room.
//
// Usage: node flow_jssdk.mjs --base http://127.0.0.1:PORT
//
// Every step prints `OK <step>` or `FAIL <step>: <reason>` (HTTP status + errcode where the
// server answered with an error); a step whose prerequisite failed prints `SKIP`. Exit status is
// non-zero if any step failed or was skipped. All waits are bounded.

// matrix-js-sdk declares Node >= 22; on Node 20 it needs Promise.withResolvers. The polyfill must
// run before the SDK's modules are evaluated, hence the dynamic import below.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

const { randomBytes } = await import("node:crypto");
const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");

const {
    createClient,
    ClientEvent,
    Method,
    Preset,
    Visibility,
    Direction,
    ThreadFilterType,
    ReceiptType,
    SyncState,
} = sdk;

const PASSWORD = "flow-password-Gx7!";
const WAIT = 25_000; // ms: upper bound for "wait until the other side sees it"
const STEP_TIMEOUT = 120_000;

function parseArgs() {
    const args = process.argv.slice(2);
    const out = { base: null, verbose: false };
    for (let i = 0; i < args.length; i++) {
        if (args[i] === "--base") out.base = args[++i];
        else if (args[i].startsWith("--base=")) out.base = args[i].slice(7);
        else if (args[i] === "--verbose") out.verbose = true;
    }
    if (!out.base) {
        console.error("usage: flow_jssdk.mjs --base http://127.0.0.1:PORT");
        process.exit(2);
    }
    out.base = out.base.replace(/\/+$/, "");
    return out;
}

const opts = parseArgs();
if (!opts.verbose) {
    // Child loggers (per room, per request) copy the root logger's methodFactory when created.
    logger.methodFactory = () => () => {};
    logger.rebuild();
}

class StepFailed extends Error {}

function fail(msg) {
    throw new StepFailed(msg);
}

function describeError(e) {
    if (e instanceof StepFailed) return e.message;
    if (e && typeof e.httpStatus === "number") {
        const url = e.url ? ` on ${String(e.url).replace(/\?.*$/, "").replace(/^https?:\/\/[^/]+/, "")}` : "";
        const body = e.data ? JSON.stringify(e.data).slice(0, 300) : e.message;
        return `HTTP ${e.httpStatus}${e.errcode ? " " + e.errcode : ""}${url}: ${body}`;
    }
    return `${e?.name ?? "Error"}: ${e?.message ?? e}${e?.stack ? " @ " + e.stack.split("\n")[1]?.trim() : ""}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, what, timeout = WAIT, interval = 100) {
    const deadline = Date.now() + timeout;
    let lastErr = null;
    while (Date.now() < deadline) {
        try {
            const r = await fn();
            if (r) return r;
        } catch (e) {
            lastErr = e;
        }
        await sleep(interval);
    }
    fail(`did not see ${what} within ${timeout / 1000}s${lastErr ? " (last error: " + describeError(lastErr) + ")" : ""}`);
}

class User {
    constructor(name, base, suffix) {
        this.name = name;
        this.base = base;
        this.localpart = `flowjs${name.toLowerCase()}${suffix}`;
        this.userId = null;
        this.client = null;
        this.events = []; // every MatrixEvent the sync loop emitted
    }

    get c() {
        if (!this.client) fail(`user ${this.name} has no logged-in client`);
        return this.client;
    }

    findEvent(pred) {
        for (const ev of this.events) {
            try {
                if (pred(ev)) return ev;
            } catch {
                /* ignore malformed */
            }
        }
        return null;
    }

    waitEvent(pred, what, timeout = WAIT) {
        return waitFor(() => this.findEvent(pred), `${this.name}: ${what}`, timeout);
    }

    waitEventId(roomId, eventId, what) {
        return this.waitEvent((ev) => ev.getRoomId() === roomId && ev.getId() === eventId, what);
    }
}

const rel = (ev) => ev.getContent()?.["m.relates_to"] ?? {};

class Flow {
    constructor(base) {
        this.base = base;
        this.suffix = randomBytes(4).toString("hex");
        this.a = new User("A", base, this.suffix);
        this.b = new User("B", base, this.suffix);
        this.results = [];
        this.s = {};
        this.server = null;
    }

    async step(name, fn, needs = []) {
        const missing = needs.filter((n) => !this.results.some((r) => r.name === n && r.status === "OK"));
        if (missing.length) {
            const roots = missing.filter((n) => this.results.some((r) => r.name === n && r.status === "FAIL"));
            const why = `prerequisite failed: ${(roots.length ? roots : missing).join(", ")}`;
            this.results.push({ name, status: "SKIP", why });
            console.log(`SKIP ${name}: ${why}`);
            return;
        }
        const t0 = Date.now();
        let timer;
        try {
            await Promise.race([
                fn(),
                new Promise((_, rej) => {
                    timer = setTimeout(() => rej(new StepFailed(`step timed out after ${STEP_TIMEOUT / 1000}s`)), STEP_TIMEOUT);
                }),
            ]);
            this.results.push({ name, status: "OK", why: "" });
            console.log(`OK   ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
        } catch (e) {
            const why = describeError(e);
            this.results.push({ name, status: "FAIL", why });
            console.log(`FAIL ${name}: ${why}`);
        } finally {
            clearTimeout(timer);
        }
    }

    // ---- registration / login ------------------------------------------------------------
    async register(u) {
        const tmp = createClient({ baseUrl: this.base });
        let session = null;
        try {
            await tmp.registerRequest({ username: u.localpart, password: PASSWORD });
            fail("register without auth succeeded; expected 401 UIA");
        } catch (e) {
            if (e instanceof StepFailed) throw e;
            if (e.httpStatus !== 401) fail(`register without auth: expected 401 UIA, got ${describeError(e)}`);
            const flows = (e.data?.flows ?? []).map((f) => JSON.stringify(f.stages ?? []));
            if (!flows.includes(JSON.stringify(["m.login.dummy"]))) fail(`no m.login.dummy flow: ${flows}`);
            session = e.data?.session;
            if (!session) fail("UIA 401 carried no session");
        }
        const res = await tmp.register(u.localpart, PASSWORD, session, { type: "m.login.dummy", session });
        if (!res.user_id?.startsWith(`@${u.localpart}:`)) fail(`unexpected user_id ${res.user_id}`);
        if (!res.access_token) fail("register returned no access_token");
        u.userId = res.user_id;
        this.server = res.user_id.split(":").slice(1).join(":");
    }

    async login(u) {
        const tmp = createClient({ baseUrl: this.base });
        const res = await tmp.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: u.localpart },
            password: PASSWORD,
            initial_device_display_name: `js-sdk flow ${u.name}`,
        });
        if (res.user_id !== u.userId) fail(`login user_id ${res.user_id} != ${u.userId}`);
        const c = createClient({
            baseUrl: this.base,
            userId: res.user_id,
            accessToken: res.access_token,
            deviceId: res.device_id,
        });
        u.client = c;
        c.on(ClientEvent.Event, (ev) => u.events.push(ev));
        const who = await c.whoami();
        if (who.user_id !== u.userId || who.device_id !== res.device_id) fail(`whoami mismatch: ${JSON.stringify(who)}`);
        await c.initRustCrypto({ useIndexedDB: false });
    }

    async startSync(u) {
        const c = u.c;
        const prepared = new Promise((resolve) => {
            c.on(ClientEvent.Sync, (state, _prev, data) => {
                if (state === SyncState.Prepared || state === SyncState.Syncing) resolve(null);
                if (state === SyncState.Error) u.lastSyncError = data?.error;
            });
        });
        await c.startClient({ initialSyncLimit: 20, pollTimeout: 5000 });
        await Promise.race([
            prepared,
            sleep(WAIT).then(() =>
                fail(`initial sync did not complete: ${u.lastSyncError ? describeError(u.lastSyncError) : "timeout"}`),
            ),
        ]);
    }

    // ---- profile ---------------------------------------------------------------------------
    async profile() {
        for (const u of [this.a, this.b]) {
            await u.c.setDisplayName(`Flow ${u.name} ${this.suffix}`);
            await u.c.setAvatarUrl(`mxc://${this.server}/avatar${u.name}${this.suffix}`);
        }
        const p = await this.b.c.getProfileInfo(this.a.userId);
        if (p.displayname !== `Flow A ${this.suffix}`) fail(`A displayname seen by B = ${p.displayname}`);
        if (p.avatar_url !== `mxc://${this.server}/avatarA${this.suffix}`) fail(`A avatar_url seen by B = ${p.avatar_url}`);
    }

    // ---- device keys ---------------------------------------------------------------------------
    async keysUpload() {
        for (const u of [this.a, this.b]) {
            const own = await u.c.getCrypto().getOwnDeviceKeys();
            const dev = await waitFor(async () => {
                const r = await u.c.downloadKeysForUsers([u.userId]);
                return r.device_keys?.[u.userId]?.[u.c.getDeviceId()];
            }, `${u.name}'s own device keys on the server (rust crypto uploads them)`);
            if (dev.keys?.[`curve25519:${u.c.getDeviceId()}`] !== own.curve25519) fail(`${u.name}: curve25519 mismatch`);
            if (dev.keys?.[`ed25519:${u.c.getDeviceId()}`] !== own.ed25519) fail(`${u.name}: ed25519 mismatch`);
            const counts = await waitFor(async () => {
                const r = await u.c.uploadKeysRequest({});
                const n = r.one_time_key_counts?.signed_curve25519 ?? 0;
                return n > 0 ? r.one_time_key_counts : null;
            }, `${u.name}'s signed_curve25519 one-time keys`);
            if (!(counts.signed_curve25519 > 0)) fail(`${u.name}: one_time_key_counts ${JSON.stringify(counts)}`);
        }
    }

    async keysQuery() {
        const { a, b } = this;
        const r = await a.c.downloadKeysForUsers([b.userId]);
        const dev = r.device_keys?.[b.userId]?.[b.c.getDeviceId()];
        if (!dev) fail(`B's device ${b.c.getDeviceId()} not in keys/query: ${JSON.stringify(Object.keys(r.device_keys?.[b.userId] ?? {}))}`);
        const own = await b.c.getCrypto().getOwnDeviceKeys();
        if (dev.keys?.[`ed25519:${b.c.getDeviceId()}`] !== own.ed25519) fail("B's ed25519 from keys/query differs");
        if (!dev.signatures?.[b.userId]?.[`ed25519:${b.c.getDeviceId()}`]) fail("B's device keys unsigned");
        // and through the crypto layer (which verifies the device self-signature)
        const map = await a.c.getCrypto().getUserDeviceInfo([b.userId], true);
        const d = map.get(b.userId)?.get(b.c.getDeviceId());
        if (!d) fail("A's crypto layer does not know B's device after getUserDeviceInfo");
        if (d.getIdentityKey() !== own.curve25519) fail("crypto layer: B's curve25519 key differs");
    }

    // ---- rooms ---------------------------------------------------------------------------
    async createRoom() {
        const { a } = this;
        const { room_id: rid } = await a.c.createRoom({
            preset: Preset.PrivateChat,
            name: `Flow room ${this.suffix}`,
            topic: `Topic ${this.suffix}`,
        });
        this.s.room = rid;
        const name = await a.c.getStateEvent(rid, "m.room.name", "");
        if (name.name !== `Flow room ${this.suffix}`) fail(`m.room.name: ${JSON.stringify(name)}`);
        const topic = await a.c.getStateEvent(rid, "m.room.topic", "");
        if (topic.topic !== `Topic ${this.suffix}`) fail(`m.room.topic: ${JSON.stringify(topic)}`);
        const jr = await a.c.getStateEvent(rid, "m.room.join_rules", "");
        if (jr.join_rule !== "invite") fail(`private_chat gave join_rule ${jr.join_rule}`);
    }

    async inviteAndJoin(key = "room") {
        const { a, b } = this;
        const rid = this.s[key];
        await waitFor(() => a.c.getRoom(rid)?.getMyMembership() === "join", "A: own room in sync");
        await a.c.invite(rid, b.userId);
        await waitFor(() => b.c.getRoom(rid)?.getMyMembership() === "invite", "B: invite in sync");
        const inviter = b.c.getRoom(rid).getMember(b.userId)?.events?.member?.getSender();
        if (inviter !== a.userId) fail(`invite sender ${inviter}`);
        await b.c.joinRoom(rid);
        await waitFor(() => b.c.getRoom(rid)?.getMyMembership() === "join", "B: joined room in sync");
        await a.waitEvent(
            (ev) => ev.getRoomId() === rid && ev.getType() === "m.room.member" && ev.getStateKey() === b.userId &&
                ev.getContent().membership === "join",
            "B's join membership event",
        );
    }

    async memberProfile() {
        const m = this.b.c.getRoom(this.s.room)?.getMember(this.a.userId);
        if (m?.rawDisplayName !== `Flow A ${this.suffix}`) fail(`A's member displayname as seen by B: ${m?.rawDisplayName}`);
        if (m?.getMxcAvatarUrl() !== `mxc://${this.server}/avatarA${this.suffix}`) fail(`A's member avatar: ${m?.getMxcAvatarUrl()}`);
    }

    async sendText(u, rid, body, extra = {}) {
        const r = await u.c.sendMessage(rid, { msgtype: "m.text", body, ...extra });
        if (!r.event_id) fail("send returned no event_id");
        return r.event_id;
    }

    async messages() {
        const { a, b } = this;
        const rid = this.s.room;
        const ea = await this.sendText(a, rid, `hello from A ${this.suffix}`);
        const ev = await b.waitEventId(rid, ea, "A's message");
        if (ev.getContent().body !== `hello from A ${this.suffix}` || ev.getSender() !== a.userId) fail("A's message content/sender wrong");
        const eb = await this.sendText(b, rid, `hello from B ${this.suffix}`);
        const ev2 = await a.waitEventId(rid, eb, "B's message");
        if (ev2.getContent().body !== `hello from B ${this.suffix}`) fail("B's message content wrong");
        this.s.msgA = ea;
        this.s.msgB = eb;
    }

    async reply() {
        const { a, b } = this;
        const rid = this.s.room;
        const er = await this.sendText(b, rid, `reply ${this.suffix}`, {
            "m.relates_to": { "m.in_reply_to": { event_id: this.s.msgA } },
        });
        const ev = await a.waitEventId(rid, er, "B's reply");
        if (rel(ev)["m.in_reply_to"]?.event_id !== this.s.msgA) fail(`reply m.relates_to: ${JSON.stringify(rel(ev))}`);
        if (ev.replyEventId !== this.s.msgA) fail(`SDK replyEventId = ${ev.replyEventId}`);
    }

    async edit() {
        const { a, b } = this;
        const rid = this.s.room;
        const target = this.s.msgA;
        const nb = `hello from A (edited) ${this.suffix}`;
        const ee = await this.sendText(a, rid, `* ${nb}`, {
            "m.new_content": { msgtype: "m.text", body: nb },
            "m.relates_to": { rel_type: "m.replace", event_id: target },
        });
        const ev = await b.waitEventId(rid, ee, "A's edit");
        if (rel(ev).rel_type !== "m.replace" || rel(ev).event_id !== target) fail(`edit m.relates_to ${JSON.stringify(rel(ev))}`);
        const r = await b.c.relations(rid, target, "m.replace");
        if (!r.events.some((e) => e.getId() === ee)) fail(`/relations m.replace lacks the edit: ${r.events.map((e) => e.getId())}`);
        if (r.originalEvent?.getId() !== target) fail("relations(): original event not fetched");
        // The SDK applies the edit to the original event in B's timeline.
        await waitFor(() => {
            const orig = b.c.getRoom(rid)?.findEventById(target);
            return orig?.getContent()?.body === nb;
        }, "B's timeline showing the edited body");
    }

    async reaction() {
        const { a, b } = this;
        const rid = this.s.room;
        const target = this.s.msgA;
        const r = await b.c.sendEvent(rid, "m.reaction", {
            "m.relates_to": { rel_type: "m.annotation", event_id: target, key: "👍" },
        });
        const ev = await a.waitEventId(rid, r.event_id, "B's reaction");
        if (rel(ev).key !== "👍") fail(`reaction m.relates_to ${JSON.stringify(rel(ev))}`);
        const rels = await a.c.relations(rid, target, "m.annotation", "m.reaction");
        if (!rels.events.some((e) => e.getId() === r.event_id)) fail(`/relations m.annotation/m.reaction lacks it: ${rels.events.map((e) => e.getId())}`);
        const all = await a.c.fetchRelations(rid, target, null);
        if (!all.chunk.some((e) => e.event_id === r.event_id)) fail("/relations (all types) lacks the reaction");
        // SDK aggregation
        await waitFor(() => {
            const set = a.c.getRoom(rid)?.getUnfilteredTimelineSet().relations.getChildEventsForEvent(target, "m.annotation", "m.reaction");
            return set?.getSortedAnnotationsByKey()?.some(([key, evs]) => key === "👍" && evs.size === 1);
        }, "A's SDK aggregating the 👍 annotation");
    }

    async thread() {
        const { a, b } = this;
        const rid = this.s.room;
        const root = this.s.msgB;
        const et = await this.sendText(a, rid, `thread reply ${this.suffix}`, {
            "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } },
        });
        const ev = await b.waitEventId(rid, et, "A's thread reply");
        if (rel(ev).rel_type !== "m.thread" || rel(ev).event_id !== root) fail(`thread m.relates_to ${JSON.stringify(rel(ev))}`);
        if (ev.threadRootId !== root) fail(`SDK threadRootId = ${ev.threadRootId}`);
        const r = await b.c.relations(rid, root, "m.thread");
        if (!r.events.some((e) => e.getId() === et)) fail(`/relations m.thread lacks the reply: ${r.events.map((e) => e.getId())}`);
        const threads = await b.c.createThreadListMessagesRequest(rid, null, 10, Direction.Backward, ThreadFilterType.All);
        if (!threads.chunk.some((e) => e.event_id === root)) fail(`/threads lacks root ${root}: ${threads.chunk.map((e) => e.event_id)}`);
        const rootEv = threads.chunk.find((e) => e.event_id === root);
        const summary = rootEv.unsigned?.["m.relations"]?.["m.thread"];
        if (!summary || summary.count < 1 || summary.latest_event?.event_id !== et) {
            fail(`thread root lacks bundled m.thread summary: ${JSON.stringify(rootEv.unsigned ?? {}).slice(0, 300)}`);
        }
        const mine = await a.c.createThreadListMessagesRequest(rid, null, 10, Direction.Backward, ThreadFilterType.My);
        if (!mine.chunk.some((e) => e.event_id === root)) fail("/threads?include=participated lacks the thread A replied in");
    }

    async redaction() {
        const { a, b } = this;
        const rid = this.s.room;
        const victim = await this.sendText(b, rid, `to be redacted ${this.suffix}`);
        await a.waitEventId(rid, victim, "message to be redacted");
        await b.c.redactEvent(rid, victim, undefined, { reason: "flow test" });
        await a.waitEvent(
            (ev) => ev.getRoomId() === rid && ev.getType() === "m.room.redaction" && (ev.event.redacts ?? ev.getContent().redacts) === victim,
            "m.room.redaction",
        );
        const raw = await a.c.fetchRoomEvent(rid, victim);
        if (raw.content && Object.keys(raw.content).length) fail(`redacted event still has content ${JSON.stringify(raw.content)}`);
        await waitFor(() => a.c.getRoom(rid)?.findEventById(victim)?.isRedacted(), "A's SDK marking the event redacted");
    }

    async typing() {
        const { a, b } = this;
        const rid = this.s.room;
        await a.c.sendTyping(rid, true, 20000);
        await waitFor(() => b.c.getRoom(rid)?.getMember(a.userId)?.typing === true, "B: A typing");
        await a.c.sendTyping(rid, false, 0);
        await waitFor(() => b.c.getRoom(rid)?.getMember(a.userId)?.typing === false, "B: A stopped typing");
    }

    async receipt() {
        const { a, b } = this;
        const rid = this.s.room;
        // A receipt that goes backwards (before one the user already has) may be ignored, so read
        // a fresh message from A, as a client marking the room read would.
        const target = await this.sendText(a, rid, `read me ${this.suffix}`);
        const ev = await b.waitEventId(rid, target, "message to mark read");
        await b.c.sendReceipt(ev, ReceiptType.Read, {}, true);
        await a.waitEvent(
            // ephemeral events from sync carry no room_id in the SDK; the event id key identifies the room
            (e) => e.getType() === "m.receipt" && e.getContent()?.[target]?.["m.read"]?.[b.userId],
            "B's m.read receipt",
        ).catch((e) => {
            const seen = a.events.filter((x) => x.getType() === "m.receipt").map((x) => JSON.stringify(x.getContent()));
            fail(`${e.message}; receipts A saw: ${seen.join(" | ").slice(0, 600)}`);
        });
        await waitFor(() => a.c.getRoom(rid)?.getEventReadUpTo(b.userId) !== null, "A's SDK read-up-to for B");
        await b.c.setRoomReadMarkersHttpRequest(rid, target, target);
    }

    async presence() {
        const { a, b } = this;
        const msg = `flow status ${this.suffix}`;
        await a.c.setPresence({ presence: "online", status_msg: msg });
        await waitFor(() => {
            const user = b.c.getUser(a.userId);
            return user?.presence === "online" && user?.presenceStatusMsg === msg;
        }, "B: A's presence (online + status_msg) via sync");
        const p = await b.c.getPresence(a.userId);
        if (p.presence !== "online" || p.status_msg !== msg) fail(`GET presence: ${JSON.stringify(p)}`);
    }

    async accountData() {
        const { a } = this;
        const rid = this.s.room;
        await a.c.setAccountData("org.ganglion.flow", { n: this.suffix });
        await a.c.setRoomAccountData(rid, "org.ganglion.flow.room", { r: this.suffix });
        await a.c.setRoomTag(rid, "u.work", { order: 0.5 });
        await a.c.setRoomTag(rid, "m.favourite", {});
        const g = await a.c.getAccountDataFromServer("org.ganglion.flow");
        if (g?.n !== this.suffix) fail(`GET global account data: ${JSON.stringify(g)}`);
        const tags = await a.c.getRoomTags(rid);
        if (tags.tags?.["u.work"]?.order !== 0.5 || !tags.tags?.["m.favourite"]) fail(`GET tags: ${JSON.stringify(tags)}`);
        await waitFor(() => a.c.getAccountData("org.ganglion.flow")?.getContent()?.n === this.suffix, "global account data via sync");
        await waitFor(() => a.c.getRoom(rid)?.getAccountData("org.ganglion.flow.room")?.getContent()?.r === this.suffix, "room account data via sync");
        await waitFor(() => {
            const t = a.c.getRoom(rid)?.tags ?? {};
            return t["u.work"]?.order === 0.5 && t["m.favourite"];
        }, "m.tag via sync");
        await a.c.deleteRoomTag(rid, "u.work");
        await waitFor(() => {
            const t = a.c.getRoom(rid)?.tags ?? {};
            return !t["u.work"] && t["m.favourite"];
        }, "tag deletion via sync");
    }

    async filter() {
        const { a, b } = this;
        const rid = this.s.room;
        const f = await b.c.createFilter({
            room: { timeline: { limit: 3, types: ["m.room.message"] }, ephemeral: { not_types: ["*"] } },
            presence: { not_types: ["*"] },
        });
        if (!f.filterId) fail("createFilter returned no filter id");
        const back = await b.c.getFilter(b.userId, f.filterId, false);
        if (back.getDefinition()?.room?.timeline?.limit !== 3) fail(`GET filter: ${JSON.stringify(back.getDefinition())}`);
        const marker = await this.sendText(a, rid, `filtered ${this.suffix}`);
        await b.waitEventId(rid, marker, "marker message");
        const s = await b.c.http.authedRequest(Method.Get, "/sync", { filter: f.filterId, timeout: "0" });
        const room = s.rooms?.join?.[rid];
        if (!room) fail("filtered sync lacks the room");
        const evs = room.timeline?.events ?? [];
        const types = new Set(evs.map((e) => e.type));
        if ([...types].some((t) => t !== "m.room.message")) fail(`filtered timeline has types ${[...types]}`);
        if (evs.length > 3) fail(`filtered timeline has ${evs.length} events > 3`);
        if (!evs.some((e) => e.event_id === marker)) fail("filtered timeline lacks the latest message");
        if (!room.timeline.limited) fail("filtered timeline not limited although older messages exist");
        if ((s.presence?.events ?? []).length) fail("presence delivered despite not_types [*]");
        const inline = await b.c.http.authedRequest(Method.Get, "/sync", {
            filter: JSON.stringify({ room: { rooms: [rid], timeline: { limit: 1 } } }),
            timeout: "0",
        });
        const joined = Object.keys(inline.rooms?.join ?? {});
        if (joined.length !== 1 || joined[0] !== rid) fail(`inline filter rooms=[rid] gave rooms ${joined}`);
        if ((inline.rooms.join[rid].timeline?.events ?? []).length > 1) fail("inline filter limit 1 not applied");
    }

    async createPublic() {
        const { a } = this;
        const { room_id: rid } = await a.c.createRoom({
            preset: Preset.PublicChat,
            name: `Flow lobby ${this.suffix}`,
            topic: `Public lobby ${this.suffix}`,
        });
        this.s.pub = rid;
        const jr = await a.c.getStateEvent(rid, "m.room.join_rules", "");
        if (jr.join_rule !== "public") fail(`public_chat gave join_rule ${jr.join_rule}`);
    }

    async directory() {
        const { a, b } = this;
        const rid = this.s.pub;
        await a.c.setRoomDirectoryVisibility(rid, Visibility.Public);
        const vis = await a.c.getRoomDirectoryVisibility(rid);
        if (vis.visibility !== "public") fail(`directory visibility: ${JSON.stringify(vis)}`);
        await waitFor(async () => {
            const lst = await b.c.publicRooms({ limit: 100 });
            if (!lst.chunk.some((r) => r.room_id === rid)) return false;
            const srch = await b.c.publicRooms({ filter: { generic_search_term: `lobby ${this.suffix}` } });
            const hit = srch.chunk.filter((r) => r.room_id === rid);
            if (srch.chunk.length !== 1 || hit.length !== 1) return false;
            if (hit[0].name !== `Flow lobby ${this.suffix}` || hit[0].num_joined_members !== 1) {
                fail(`public room entry ${JSON.stringify(hit[0])}`);
            }
            return true;
        }, "public room listed and found by search");
    }

    async alias() {
        const { a, b } = this;
        const rid = this.s.pub;
        const al = `#flowjs-${this.suffix}:${this.server}`;
        await a.c.createAlias(al, rid);
        const r = await b.c.getRoomIdForAlias(al);
        if (r.room_id !== rid) fail(`alias resolved to ${r.room_id}`);
        if (!r.servers?.includes(this.server)) fail(`alias servers ${r.servers}`);
        const room = await b.c.joinRoom(al);
        if (room.roomId !== rid) fail(`join by alias gave ${room.roomId}`);
        const local = await a.c.getLocalAliases(rid);
        if (!local.aliases?.includes(al)) fail(`GET rooms/{id}/aliases: ${JSON.stringify(local)}`);
    }

    async userDirectory() {
        const { a, b } = this;
        await waitFor(async () => {
            const r = await a.c.searchUserDirectory({ term: b.localpart, limit: 10 });
            const hit = r.results.find((x) => x.user_id === b.userId);
            if (hit && hit.display_name !== `Flow B ${this.suffix}`) fail(`directory entry ${JSON.stringify(hit)}`);
            return !!hit;
        }, "B in the user directory");
        const r = await a.c.searchUserDirectory({ term: `Flow B ${this.suffix}` });
        if (!r.results.some((x) => x.user_id === b.userId)) fail("search by display name did not find B");
    }

    async e2ee() {
        const { a, b } = this;
        const { room_id: rid } = await a.c.createRoom({
            preset: Preset.PrivateChat,
            name: `Flow secret ${this.suffix}`,
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        this.s.enc = rid;
        await waitFor(() => a.c.getRoom(rid)?.getMyMembership() === "join", "A: encrypted room in sync");
        await this.inviteAndJoin("enc");
        await waitFor(async () => await a.c.getCrypto().isEncryptionEnabledInRoom(rid), "A's crypto: room encrypted");
        await waitFor(async () => await b.c.getCrypto().isEncryptionEnabledInRoom(rid), "B's crypto: room encrypted");
        await waitFor(() => a.c.getRoom(rid)?.getMember(b.userId)?.membership === "join", "A: B joined (room state)");

        const body = `secret from A ${this.suffix}`;
        const eid = await this.sendText(a, rid, body);
        const raw = await a.c.http.authedRequest(Method.Get, `/rooms/${encodeURIComponent(rid)}/event/${encodeURIComponent(eid)}`);
        if (raw.type !== "m.room.encrypted" || raw.content?.algorithm !== "m.megolm.v1.aes-sha2") fail(`stored as ${raw.type}`);
        const ev = await b.waitEventId(rid, eid, "A's encrypted event");
        await waitFor(async () => {
            await b.c.decryptEventIfNeeded(ev);
            return !ev.isBeingDecrypted() && !ev.isDecryptionFailure() && ev.getType() === "m.room.message";
        }, `B decrypting A's message (last: ${ev.decryptionFailureReason ?? "pending"})`);
        if (ev.getWireType() !== "m.room.encrypted") fail("event was not encrypted on the wire");
        if (ev.getContent().body !== body) fail(`B decrypted ${JSON.stringify(ev.getContent())}`);

        const body2 = `secret from B ${this.suffix}`;
        const eid2 = await this.sendText(b, rid, body2);
        const ev2 = await a.waitEventId(rid, eid2, "B's encrypted event");
        await waitFor(async () => {
            await a.c.decryptEventIfNeeded(ev2);
            return !ev2.isDecryptionFailure() && ev2.getType() === "m.room.message";
        }, "A decrypting B's message");
        if (ev2.getContent().body !== body2) fail(`A decrypted ${JSON.stringify(ev2.getContent())}`);
    }

    async leaveForget() {
        const { a, b } = this;
        const rid = this.s.room;
        await b.c.leave(rid);
        await a.waitEvent(
            (ev) => ev.getRoomId() === rid && ev.getType() === "m.room.member" && ev.getStateKey() === b.userId &&
                ev.getContent().membership === "leave",
            "B's leave",
        );
        await waitFor(() => b.c.getRoom(rid)?.getMyMembership() === "leave", "B: membership leave in sync");
        await b.c.forget(rid, true);
        const jr = await b.c.getJoinedRooms();
        if (jr.joined_rooms.includes(rid)) fail("room still in joined_rooms");
        const s = await b.c.http.authedRequest(Method.Get, "/sync", {
            filter: JSON.stringify({ room: { include_leave: true } }),
            timeout: "0",
        });
        for (const sec of ["join", "leave", "invite"]) {
            if (s.rooms?.[sec]?.[rid]) fail(`forgotten room still under rooms.${sec} in a fresh sync`);
        }
    }

    async run() {
        const { a, b } = this;
        console.log(`# matrix-js-sdk flow against ${this.base} (suffix ${this.suffix}, node ${process.version})`);
        const st = this.step.bind(this);
        await st("register A (UIA m.login.dummy)", () => this.register(a));
        await st("register B (UIA m.login.dummy)", () => this.register(b));
        await st("login A + rust crypto init", () => this.login(a), ["register A (UIA m.login.dummy)"]);
        await st("login B + rust crypto init", () => this.login(b), ["register B (UIA m.login.dummy)"]);
        const both = ["login A + rust crypto init", "login B + rust crypto init"];
        await st("A starts syncing (pushrules, filter, initial sync)", () => this.startSync(a), both);
        await st("B starts syncing (pushrules, filter, initial sync)", () => this.startSync(b), both);
        const syncing = [...both, "A starts syncing (pushrules, filter, initial sync)", "B starts syncing (pushrules, filter, initial sync)"];
        await st("profile displayname + avatar_url", () => this.profile(), both);
        await st("device keys + one-time keys upload", () => this.keysUpload(), syncing);
        await st("keys/query for the other user", () => this.keysQuery(), [...both, "device keys + one-time keys upload"]);
        await st("create room (private_chat, name, topic)", () => this.createRoom(), both);
        const room = [...syncing, "create room (private_chat, name, topic)"];
        await st("invite B, B sees invite, B joins", () => this.inviteAndJoin(), room);
        const joined = [...room, "invite B, B sees invite, B joins"];
        await st("member displayname in room state", () => this.memberProfile(), [...joined, "profile displayname + avatar_url"]);
        await st("messages both ways", () => this.messages(), joined);
        const msgs = [...joined, "messages both ways"];
        await st("reply (m.in_reply_to)", () => this.reply(), msgs);
        await st("edit (m.replace) + /relations", () => this.edit(), msgs);
        await st("reaction (m.annotation) + /relations", () => this.reaction(), msgs);
        await st("thread (m.thread) + /relations + /threads", () => this.thread(), msgs);
        await st("redaction", () => this.redaction(), msgs);
        await st("typing notification", () => this.typing(), joined);
        await st("read receipt", () => this.receipt(), msgs);
        await st("presence", () => this.presence(), joined);
        await st("account data (global + room) + tags", () => this.accountData(), room);
        await st("filter upload + filtered sync", () => this.filter(), msgs);
        await st("create public room (public_chat)", () => this.createPublic(), both);
        const pub = [...both, "create public room (public_chat)"];
        await st("public room directory (publish, list, search)", () => this.directory(), pub);
        await st("room alias create + resolve + join by alias", () => this.alias(), pub);
        await st("user directory search", () => this.userDirectory(), joined);
        await st("encrypted room: B decrypts A (and back)", () => this.e2ee(), [...syncing, "device keys + one-time keys upload"]);
        await st("leave + forget", () => this.leaveForget(), joined);

        for (const u of [a, b]) {
            try {
                u.client?.stopClient();
            } catch {
                /* ignore */
            }
        }
        const ok = this.results.filter((r) => r.status === "OK").length;
        const failed = this.results.filter((r) => r.status === "FAIL");
        const skipped = this.results.filter((r) => r.status === "SKIP");
        for (const r of failed) console.log(`# FAILED ${r.name}: ${r.why}`);
        console.log(`jssdk: ${ok} passed, ${failed.length} failed, ${skipped.length} skipped`);
        return failed.length || skipped.length ? 1 : 0;
    }
}

const overall = setTimeout(() => {
    console.log("FAIL flow: overall timeout (900s)");
    process.exit(1);
}, 900_000);
let code = 1;
try {
    code = await new Flow(opts.base).run();
} catch (e) {
    console.log(`FAIL flow: ${describeError(e)}`);
}
clearTimeout(overall);
// The SDK keeps timers (sync retries, crypto) alive; exit explicitly.
process.exit(code);
