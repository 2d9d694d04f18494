"""Down-link compression of the PEFT family: clients keep the global state, the server sends deltas.

Without it the server sends every sampled client the whole global adapter every round (1.87 MB on
the default task, ~30x what a compressed up-link costs). With `compression.codec_down`:

Server (`DownlinkServer`, a layer inside `MeteredGrid`, so `bytes_down` counts what really goes out)
keeps one *reference* x̂: the global state exactly as clients reconstruct it. When the strategy
hands out a new global x_t it sends C(x_t − x̂_{t−1}) and sets x̂_t = x̂_{t−1} + decode(C(...)).
Because the next delta is again taken against x̂, whatever C dropped this round is sent in a later
round: comparing against the reference *is* the error feedback, and ||x_t − x̂_t|| stays at the size
of one round's compression error instead of growing. One delta per round serves every client
that holds x̂_{t−1} (compressed once, same bytes). A client that missed rounds gets the chain of
logged deltas since its version (each exactly as sent before, so it reconstructs x̂_t bit for bit)
if that is smaller than the whole state, else the whole state (lossless). Version 0 is the initial
adapter, which every party builds deterministically from (model, PEFT config, seed): a client that
holds nothing is sent only its fingerprint (and the deltas since), and builds it.

Clients train from x̂_t; their update Δ_i = local_i − x̂_t is applied to the server's own x_t
(replies are rebased: up-link updates decode against x_t, plain `arrays` get x_t − x̂_t added), so
the strategy aggregates x_t + Δ_i as it always did. The server evaluates and saves x_t; clients hold
x̂_t, which differs from it by one round's compression error (docs/compression.md).

Trust: the node → version map comes from what each reply reports, and only if it matches what that
node was sent; a reply that reports anything else is dropped and the node gets the full state next
time, as does a node whose reply is an error or never came. A client applies a chain only to the
state whose fingerprint it names (SHA-256), checks the result's fingerprint, and refuses anything
else with one PayloadError line (the reply is then an error). Wire: pollen.v1.Downlink
(protos/pollen/v1/downlink.proto), decoded with the up-link's rules (`decode_update`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from pollen.compression import Codec, decode_update
from pollen.compression._proto.pollen.v1 import downlink_pb2 as pb
from pollen.compression.wire import MAX_NAME
from pollen.compression.wirescan import LEN, VARINT, Field, ScanError, scan
from pollen.errors import PayloadError

log = logging.getLogger("pollen.server")

DOWNLINK_KEY = "downlink"  # ConfigRecord of a train message ("blob") and of its reply (the report)
HELD_KEY = "pollen-down-held"  # context.state: the state this node holds (ArrayRecord)
HELD_META_KEY = "pollen-down-meta"  # context.state: its version and fingerprint
FULL_CODEC = "zstd"  # the whole state is sent losslessly
FP_BYTES = 32
BROKEN = -1  # node map value: holds nothing usable, send the full state
State = dict[str, np.ndarray]


def enabled(codec_down: str) -> bool:
    return codec_down.strip().lower() not in ("", "none")


def fingerprint(state: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of a state as float32 (names sorted, shapes included): what a version *is*."""
    h = hashlib.sha256(b"pollen.v1.Downlink")
    for name in sorted(state):
        a = np.ascontiguousarray(state[name], dtype="<f4")
        h.update(name.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.digest()


def _f32(state: Mapping[str, np.ndarray]) -> State:
    return {k: np.array(v, dtype=np.float32) for k, v in state.items()}


def _apply(base: State, delta: Mapping[str, np.ndarray]) -> State:
    """x̂ + decoded delta, float32: the one operation both sides run, so they agree bit for bit."""
    return {k: np.add(base[k], delta[k], dtype=np.float32) for k in base}


def _expected(state: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(int(s) for s in v.shape), "float32") for k, v in state.items()}


def _short(fp: bytes) -> str:
    return fp[:6].hex() if fp else "none"


# ---- server ----------------------------------------------------------------------------------
@dataclass
class _Logged:
    version: int
    blob: bytes  # the delta that turned version-1 into this version, as sent
    fp: bytes


class DownlinkServer:
    """The server's reference x̂, its delta log and the node → held-version map (all bounded).

    `MeteredGrid` calls `outbound` before a round's messages leave, `restore` once they are back,
    and `inbound` on the replies before decoding and screening.
    """

    def __init__(self, codec: str | Codec, initial: Mapping[str, np.ndarray], *, history: int = 8,
                 max_nodes: int = 1 << 16) -> None:
        self.codec = Codec.parse(codec)
        self.history = history
        self.max_nodes = max_nodes
        self.initial_fp = fingerprint(initial)  # what a client builds by itself
        self.ref: State | None = None  # x̂
        self.residual: State = {}  # x − x̂ of the current round (rebases plain `arrays` replies)
        self.version = 0
        self.fps: dict[int, bytes] = {}  # versions a node may hold and still get a chain
        self.log: list[_Logged] = []  # the last `history` deltas
        self.base_initial = False  # version 0 is the buildable initial adapter
        self.nodes: OrderedDict[int, int] = OrderedDict()  # node -> version held (BROKEN: none)
        self._x_fp = b""
        self._full: tuple[int, bytes] | None = None
        self._wire: dict[int | None, tuple[bytes, int]] = {}  # per round: base version -> message
        self._sent: dict[int, int] = {}  # node -> version sent this exchange
        self._swapped: list[tuple[Message, RecordDict]] = []

    # -- the reference -------------------------------------------------------------------------
    def advance(self, x: Mapping[str, np.ndarray]) -> None:
        """Make x̂ follow the strategy's new global x (no-op when x did not change)."""
        fp_x = fingerprint(x)
        if self.ref is not None and fp_x == self._x_fp:
            return
        if self.ref is None or _expected(self.ref) != _expected(x):  # first round or a new layout
            start = 0 if self.ref is None else self.version + 1
            self.ref, self.version, self.log = _f32(x), start, []
            self.fps = {start: fingerprint(self.ref)}
            self.base_initial = start == 0 and self.fps[start] == self.initial_fp
            self.nodes.clear()
        else:
            delta = {k: np.subtract(x[k], self.ref[k], dtype=np.float32) for k in self.ref}
            blob = self.codec.encode(delta)
            # What every client will decode (the wire decoder itself, not an in-memory shortcut).
            sent = decode_update(blob, _expected(self.ref), max_bytes=len(blob),
                                 stages=self.codec.stages)
            self.ref = _apply(self.ref, sent)
            self.version += 1
            fp = fingerprint(self.ref)
            self.log = (self.log + [_Logged(self.version, blob, fp)])[-self.history:]
            self.fps = {v: f for v, f in self.fps.items() if v >= self.version - len(self.log)}
            self.fps[self.version] = fp
            stale = [n for n, v in self.nodes.items() if v != BROKEN and v not in self.fps]
            for n in stale:  # they would get the full state anyway
                del self.nodes[n]
        self.residual = {k: np.subtract(x[k], self.ref[k], dtype=np.float32) for k in self.ref}
        self._x_fp = fp_x
        self._wire = {}

    def residual_norm(self) -> float:
        """||x − x̂||: how far the clients' copy is from the server's model (one round's error)."""
        return float(np.sqrt(sum(float(np.dot(r.ravel(), r.ravel())) for r in self.residual.values())))

    def message_for(self, node: int) -> tuple[bytes, int]:
        """pollen.v1.Downlink bytes for `node` and the version they bring it to (cached per base)."""
        held = self.nodes.get(node)
        if held is not None and held != BROKEN and held in self.fps:
            base: int | None = held
        elif held is None and self.base_initial and 0 in self.fps:
            base = 0  # it builds version 0 itself (or holds it)
        else:
            base = None
        if base not in self._wire:
            self._wire[base] = (self._encode(base), self.version)
        return self._wire[base]

    def _encode(self, base: int | None) -> bytes:
        assert self.ref is not None
        msg = pb.Downlink(format_version=pb.DOWNLINK_VERSION_1, target_version=self.version,
                          target_fingerprint=self.fps[self.version], codec=self.codec.spec)
        if base is not None:
            chain = [e.blob for e in self.log if e.version > base]
            full_size = 4 * sum(v.size for v in self.ref.values())
            if sum(len(b) for b in chain) < full_size:
                msg.kind = pb.DOWNLINK_KIND_DELTA
                msg.base_version, msg.base_fingerprint = base, self.fps[base]
                msg.base_is_initial = base == 0 and self.base_initial
                msg.updates.extend(chain)
                return msg.SerializeToString()
        if self._full is None or self._full[0] != self.version:
            self._full = (self.version, Codec.parse(FULL_CODEC).encode(self.ref))
        msg.kind = pb.DOWNLINK_KIND_FULL
        msg.updates.append(self._full[1])
        return msg.SerializeToString()

    # -- the grid hooks ------------------------------------------------------------------------
    def outbound(self, messages: list[Message]) -> None:
        """Swap the global `arrays` of train messages for each node's down-link bytes (in place)."""
        train = [m for m in messages if m.metadata.message_type.split(".", 1)[0] == "train"
                 and m.has_content() and "arrays" in m.content]
        if not train:
            return
        record = train[0].content["arrays"]
        x = {k: v.numpy() for k, v in record.items()}
        self.advance(x)
        self._sent = {}
        for m in train:
            if m.content["arrays"] is not record and fingerprint(
                    {k: v.numpy() for k, v in m.content["arrays"].items()}) != self._x_fp:
                continue  # a strategy that sends different states per node: those go in full
            node = int(m.metadata.dst_node_id)
            blob, version = self.message_for(node)
            self._sent[node] = version
            original = m.content
            content = RecordDict({k: v for k, v in original.items() if k != "arrays"})
            content[DOWNLINK_KEY] = ConfigRecord({"blob": blob})
            m.content = content
            self._swapped.append((m, original))

    def restore(self) -> None:
        """Put the strategy's own contents back (decoding and screening compare replies with them)."""
        for m, original in self._swapped:
            m.content = original
        self._swapped = []

    def inbound(self, replies: list[Message]) -> tuple[list[Message], list[str]]:
        """Record what each node now holds, rebase plain `arrays`, drop replies that do not match."""
        kept: list[Message] = []
        refused: list[str] = []
        answered = set()
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            if node not in self._sent:
                kept.append(reply)
                continue
            answered.add(node)
            target = self._sent[node]
            if reply.has_error():
                self._hold(node, BROKEN)
                log.warning("node %d answered with an error; it gets the full state next time", node)
                kept.append(reply)
                continue
            why = self._check_report(reply, target) if reply.has_content() else "no content"
            if why is not None:
                self._hold(node, BROKEN)
                log.warning("dropped update from node %d: down-link report %s; it gets the full "
                            "state next time", node, why)
                refused.append(f"node {node}: down-link report {why}")
                continue
            self._hold(node, target)
            content = RecordDict({k: v for k, v in reply.content.items() if k != DOWNLINK_KEY})
            arrays = content.get("arrays")
            if isinstance(arrays, ArrayRecord):
                content["arrays"] = self._rebase(arrays)
            reply.content = content
            kept.append(reply)
        for node in set(self._sent) - answered:  # it may or may not have applied what it got
            self._hold(node, BROKEN)
        self._sent = {}
        return kept, refused

    def _check_report(self, reply: Message, target: int) -> str | None:
        record = reply.content.config_records.get(DOWNLINK_KEY)
        if record is None:
            return "missing"
        if set(record.keys()) != {"version", "fingerprint"}:
            return f"has keys {sorted(record.keys())}, expected ['fingerprint', 'version']"
        version, fp = record["version"], record["fingerprint"]
        if not isinstance(version, int) or isinstance(version, bool) or version != target:
            return f"says version {version!r}, but version {target} was sent"
        if fp != self.fps.get(target):
            return "names a state other than the one sent"
        return None

    def _rebase(self, arrays: ArrayRecord) -> ArrayRecord:
        """local = x̂ + Δ  →  x + Δ; tensors that do not fit are left for the screen to refuse."""
        out = {}
        for k, v in arrays.items():
            a = v.numpy()
            r = self.residual.get(k)
            if r is not None and a.shape == r.shape and a.dtype.kind == "f":
                a = (a + r).astype(a.dtype)
            out[k] = Array(np.ascontiguousarray(a))
        return ArrayRecord(out)

    def _hold(self, node: int, version: int) -> None:
        self.nodes[node] = version
        self.nodes.move_to_end(node)
        while len(self.nodes) > self.max_nodes:
            self.nodes.popitem(last=False)


# ---- client ----------------------------------------------------------------------------------
def _schema(max_updates: int, max_bytes: int) -> dict[int, Field]:
    return {1: Field("format_version", (VARINT,)), 2: Field("kind", (VARINT,)),
            3: Field("base_version", (VARINT,)), 4: Field("target_version", (VARINT,)),
            5: Field("base_fingerprint", (LEN,), max_len=FP_BYTES),
            6: Field("target_fingerprint", (LEN,), max_len=FP_BYTES),
            7: Field("base_is_initial", (VARINT,)),
            8: Field("updates", (LEN,), max_count=max_updates, max_len=max_bytes),
            9: Field("codec", (LEN,), max_len=MAX_NAME)}


def parse_downlink(blob: object, *, max_updates: int, max_bytes: int) -> pb.Downlink:
    """The message's envelope, checked: sizes before parsing, then version, kind, fingerprints."""
    def fail(why: str, where: str) -> PayloadError:
        return PayloadError(f"down-link: {why}", client="server", field=where)

    if not isinstance(blob, bytes):
        raise fail(f"payload must be bytes, got {type(blob).__name__}", "downlink.blob")
    if len(blob) > max_bytes:
        raise fail(f"payload of {len(blob)} bytes exceeds the limit of {max_bytes}", "downlink.blob")
    try:
        scan(blob, _schema(max_updates, max_bytes))
        msg = pb.Downlink()
        msg.ParseFromString(blob)
    except ScanError as e:
        raise fail(str(e), e.path or "downlink") from None
    except Exception as e:  # noqa: BLE001 - any protobuf failure is a malformed payload
        raise fail(f"not a pollen.v1.Downlink ({type(e).__name__})", "downlink") from None
    if msg.format_version != pb.DOWNLINK_VERSION_1:
        raise fail(f"format_version {msg.format_version}, this client reads 1", "format_version")
    if len(msg.target_fingerprint) != FP_BYTES:
        raise fail(f"target_fingerprint must be {FP_BYTES} bytes", "target_fingerprint")
    if msg.kind == pb.DOWNLINK_KIND_FULL:
        if len(msg.updates) != 1 or msg.base_fingerprint or msg.base_is_initial:
            raise fail("a full state carries exactly one update and no base", "updates")
    elif msg.kind == pb.DOWNLINK_KIND_DELTA:
        if len(msg.base_fingerprint) != FP_BYTES:
            raise fail(f"base_fingerprint must be {FP_BYTES} bytes", "base_fingerprint")
    else:
        raise fail(f"unknown kind {msg.kind}", "kind")
    return msg


@dataclass
class Held:
    version: int
    fp: bytes
    state: State


def held_state(state: RecordDict) -> Held | None:
    """What this node kept from the last round (None when nothing, or when it does not verify)."""
    arrays, meta = state.get(HELD_KEY), state.get(HELD_META_KEY)
    if not isinstance(arrays, ArrayRecord) or not isinstance(meta, ConfigRecord):
        return None
    held = Held(int(meta["version"]), bytes(meta["fingerprint"]),  # type: ignore[arg-type]
                {k: v.numpy() for k, v in arrays.items()})
    return held if fingerprint(held.state) == held.fp else None


def receive(content: RecordDict, context: Context, initial: Callable[[], Mapping[str, np.ndarray]],
            *, codec_down: str, max_bytes: int, history: int) -> tuple[State, ConfigRecord]:
    """The global state this train message brings (kept in `context.state`), and the reply's report.

    Raises PayloadError (one line) for anything it must not train on: a malformed payload, a chain
    for a base this node does not hold, an initial adapter that differs from the server's, or a
    result whose fingerprint differs from the one announced.
    """
    record = content[DOWNLINK_KEY]
    blob = record.get("blob") if isinstance(record, ConfigRecord) else None
    msg = parse_downlink(blob, max_updates=history, max_bytes=max_bytes)
    held = held_state(context.state)
    if msg.kind == pb.DOWNLINK_KIND_FULL:
        layout = _expected(initial())
        state = decode_update(msg.updates[0], layout, max_bytes=max_bytes, client="server",
                              stages=Codec.parse(FULL_CODEC).stages)
    else:
        if held is not None and held.fp == msg.base_fingerprint:
            state = held.state
        elif msg.base_is_initial:
            state = _f32(initial())
            if fingerprint(state) != msg.base_fingerprint:
                raise PayloadError(
                    f"down-link: the initial adapter built here (fingerprint {_short(fingerprint(state))}) "
                    f"differs from the server's ({_short(msg.base_fingerprint)}): model, PEFT config, "
                    "seed or library versions differ; not training on a wrong base (the server sends "
                    "the full state next time)", client="server", field="base_fingerprint")
        else:
            have = f"version {held.version} ({_short(held.fp)})" if held else "no state"
            raise PayloadError(
                f"down-link: the delta applies to version {msg.base_version} "
                f"({_short(msg.base_fingerprint)}) but this client holds {have}; not applying it to "
                "a wrong base (the server sends the full state next time)",
                client="server", field="base_fingerprint")
        stages = Codec.parse(codec_down).stages
        for i, update in enumerate(msg.updates):
            try:
                delta = decode_update(update, _expected(state), max_bytes=max_bytes,
                                      client="server", stages=stages)
            except PayloadError as e:
                raise PayloadError(f"down-link update {i}: {e}") from None
            state = _apply(state, delta)
    if not all(np.isfinite(v).all() for v in state.values()):
        raise PayloadError("down-link: the reconstructed state holds NaN or Inf", client="server",
                           field="updates")
    fp = fingerprint(state)
    if fp != msg.target_fingerprint:
        context.state.pop(HELD_KEY, None)
        raise PayloadError(f"down-link: the reconstructed state ({_short(fp)}) is not the announced "
                           f"version {msg.target_version} ({_short(msg.target_fingerprint)})",
                           client="server", field="target_fingerprint")
    context.state[HELD_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})
    context.state[HELD_META_KEY] = ConfigRecord({"version": int(msg.target_version),
                                                 "fingerprint": fp})
    return state, ConfigRecord({"version": int(msg.target_version), "fingerprint": fp})
