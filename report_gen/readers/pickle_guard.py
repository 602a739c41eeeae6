"""A linear pre-scan of pickle bytes, run before any unpickler (ours or torch's) sees them.

Why: an unpickler runs a small stack machine, and a few hundred bytes of opcodes can make it (or the
code that later touches what it built) hang, exhaust memory or overflow the C stack:

* a tuple nested a million deep used as a dict key or set member: CPython 3.11 hashes tuples
  recursively in C without a recursion check (SIGSEGV);
* a DAG built through the memo, each level ``(T, T)``: 60 levels cost 2**60 to hash, compare or repr;
* megabytes of ``EMPTY_SET``/``EMPTY_DICT``/``MARK`` opcodes: one byte each, 60 to 400 bytes of Python
  objects each, so a 65 KB deflated ``data.pkl`` becomes gigabytes.

What the scan does: one pass over the opcodes (a bounded loop, no recursion, nothing built from the
file but small nodes), keeping a *symbolic* stack and memo: each value is a node with its kind, its
nesting depth and, for containers, its children. It refuses the pickle (`PickleRefused`, one line)
when

* it is longer than the caller's byte cap (a zip member's declared size is checked before inflating);
* it has more than `MAX_OPCODES` opcodes, or the objects an unpickler would build from it are
  estimated above `MAX_OBJECT_BYTES` (per-opcode costs measured with tracemalloc, `_COST`); both
  budgets are per input file (`Budget`), shared by all the pickles in it;
* a container is nested deeper than `MAX_DEPTH`, or marks more than `MAX_DEPTH` deep;
* something that gets hashed (a dict key, a set or frozenset member, what a hashing constructor
  such as ``set``/``frozenset``/``OrderedDict``/``Counter`` or an unidentified callable is given)
  would cost more than `MAX_HASH_NODES` node visits to hash. The cost is counted *unfolded*, through
  memo references, so a DAG costs what hashing it really costs; each walk stops at the limit and all
  walks share `MAX_WALK_TOTAL`;
* a persistent id (what torch turns into a storage, and our reader formats into messages) is not a
  tuple of at most `MAX_PID_NODES` plain values;
* the opcodes are malformed (unknown opcode, stack underflow, a memo index never stored, a length
  beyond the data, no STOP).

Why those numbers (measured with the scan itself on torch.save files, see tests/test_pickle_guard.py):

* a ``data.pkl`` only describes tensors (name, rebuild call, storage id, shape, stride): ~40
  opcodes and ~3.5 KB of objects per tensor; with Adam state, ~125 opcodes and ~11 KB per parameter.
  An 80-layer Llama state dict (723 tensors) is 30 k opcodes, 2.5 MB of objects; the same as a
  Lightning checkpoint with Adam state 90 k opcodes, 7.9 MB, 270 KB of pickle. `MAX_OPCODES` (2 M)
  and `MAX_OBJECT_BYTES` (64 MiB) leave 8-20x headroom over that (about 19 k tensors, or 6 k
  parameters with optimizer state, in one file) while bounding the worst case to ~2 M steps of the
  pure-Python unpickler and 64 MiB of objects;
* `MAX_MEMBER_BYTES` (32 MiB) for a zip member: 100x the data.pkl above, and well past what the
  opcode budget can use, so it only stops inflation bombs early; a plain pickle may carry tensor
  bytes in band (``pickle.dump(state_dict)`` embeds one torch.save blob per tensor), so its cap
  `MAX_PICKLE_BYTES` is 256 MiB (byte payloads cost no opcodes and are skipped, not copied);
* real nesting depth is below 10 (root -> optimizer_states -> state -> param -> tensor -> shape);
  `MAX_DEPTH` = 200 is far above that and far below what recursive consumers tolerate (Python's
  recursion limit is 1000, the C stack overflows near 100,000 nested tuples);
* real dict keys and set members are strings, ints or small tuples: `MAX_HASH_NODES` = 1024.

Depth is computed when a container is built or grows; a list grown after it was nested in another is
not re-propagated to its holders. That is harmless for the C stack: only tuple hashing lacks a
recursion guard in CPython (repr, comparison, json, deallocation have one), tuples are immutable
and hashing stops at the first list, so depth and hash cost of whatever can be hashed are exact.

Error text built from file data only ever goes through `bounded_repr`.
"""
from __future__ import annotations

import gc
import io
import pickle
import reprlib
import struct
import zipfile
from dataclasses import dataclass
from typing import IO, Any, Callable

from report_gen.readers.paths import LEGACY_MAGIC

MAX_PICKLE_BYTES = 256 << 20
MAX_MEMBER_BYTES = 32 << 20
MAX_OPCODES = 1 << 21
MAX_OBJECT_BYTES = 64 << 20
MAX_DEPTH = 200
MAX_HASH_NODES = 1 << 10
MAX_PID_NODES = 64
MAX_WALK_TOTAL = 1 << 22
#: a deflated .pkl member inflating more than this many times is refused before it is inflated
MAX_MEMBER_RATIO = 200

_CHUNK = 64 << 10  # also how often the opcode and memory budgets are checked
_SHORT_STR = 128  # strings up to this length keep their bytes (global names for STACK_GLOBAL)

# node kinds: atoms and names first (cheap to test: kind <= _GLOBAL), then immutable containers,
# then objects built by a call, then mutable containers
_ATOM, _STR, _GLOBAL, _TUPLE, _FROZENSET, _CONTENT, _OPAQUE, _LIST, _DICT, _SET = range(10)
_MUTABLE = (_LIST, _DICT, _SET)
_ATOM_NODE = (_ATOM, 0, None)

#: callables that hash what they are given (dict keys, set members, counted elements)
_HASHING = frozenset({
    "builtins.set", "builtins.frozenset", "builtins.dict", "collections.OrderedDict", "collections.Counter",
    "collections.defaultdict", "__builtin__.set", "__builtin__.frozenset", "__builtin__.dict",
    "copyreg._reconstructor", "copy_reg._reconstructor",
})
#: callables whose result hashes by its contents (a tuple, a frozenset, ...): hashing it walks its arguments
_CONTENT_HASHED = frozenset({
    "builtins.tuple", "__builtin__.tuple", "torch.Size", "builtins.frozenset", "__builtin__.frozenset",
    "copyreg._reconstructor", "copy_reg._reconstructor", "builtins.complex", "__builtin__.complex",
    "builtins.slice", "collections.namedtuple",
})

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxfrozenset, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 6, 60, 60, 40


def bounded_repr(value: Any, limit: int = 80) -> str:
    """repr(value) that costs at most a few hundred node visits and returns at most `limit`
    printable characters, whatever the value (a DAG, a deep tuple, a huge int, a broken __repr__)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken or refusing __repr__
        text = f"<{type(value).__name__}>"
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PickleRefused(pickle.UnpicklingError):
    """A pickle the pre-scan will not hand to any unpickler; `reason` is one line, `offset` the byte
    where the scan stopped (relative to the start of the pickle), `what` names the stream.
    `malformed`: the bytes are no valid pickle at all (unknown opcode, stack underflow, data ending
    early): damage or another format, not a bomb; False for everything a limit refused."""

    def __init__(self, reason: str, offset: int | None = None, what: str = "pickle", *,
                 malformed: bool = False) -> None:
        self.reason, self.offset, self.what, self.malformed = reason, offset, what, malformed
        where = f" at byte {offset:,}" if offset is not None else ""
        super().__init__(f"{what}: refused before unpickling: {reason}{where}")


@dataclass(frozen=True)
class ScanStats:
    """What one scanned pickle holds: its length in bytes and how much structure it builds."""

    nbytes: int
    opcodes: int
    containers: int
    max_depth: int
    object_bytes: int  # estimated bytes of Python objects an unpickler builds (see _COST)


# How the loop treats each opcode byte: the frequent ones with an argument inline (memo, strings,
# fixed-width atoms), the ones without an argument through a handler table, the rare rest inline.
(_UNKNOWN, _PUT1, _PUT4, _MEMOIZE, _GET1, _GET4, _STR4, _STR1, _ATOMW, _LEN_ATOM, _HANDLED, _EMPTY,
 _GLOBAL_OP, _INST, _LINE_ATOM, _GETL, _PUTL, _PERSID, _PROTO, _FRAME, _STOP) = range(21)
_CLASS = [_UNKNOWN] * 256
_WIDTH = [0] * 256  # fixed argument bytes (_ATOMW) or length-field bytes (_LEN_ATOM)
_LENGTH_FORMAT: list[str] = [""] * 256
for _codes, _cls in ((b"q", _PUT1), (b"r", _PUT4), (b"\x94", _MEMOIZE), (b"h", _GET1), (b"j", _GET4),
                     (b"X", _STR4), (b"\x8c", _STR1), (b"c", _GLOBAL_OP), (b"i", _INST), (b"FILSV", _LINE_ATOM),
                     (b"g", _GETL), (b"p", _PUTL), (b"P", _PERSID), (b"\x80", _PROTO), (b"\x95", _FRAME),
                     (b".", _STOP)):
    for _c in _codes:
        _CLASS[_c] = _cls
# atoms with a fixed-width argument: BININT1/2/4, BINFLOAT, NONE, NEWTRUE/FALSE, EXT1/2/4, NEXT_BUFFER
for _c, _w in ((b"K", 1), (b"M", 2), (b"J", 4), (b"G", 8), (b"N", 0), (b"\x88", 0), (b"\x89", 0),
               (b"\x82", 1), (b"\x83", 2), (b"\x84", 4), (b"\x97", 0)):
    _CLASS[_c[0]], _WIDTH[_c[0]] = _ATOMW, _w
# atoms with a length field then that many bytes: BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES,
# LONG1, LONG4, BINUNICODE8, BINBYTES8, BYTEARRAY8
for _c, _fmt in ((b"T", "<i"), (b"U", "<B"), (b"B", "<I"), (b"C", "<B"), (b"\x8a", "<B"), (b"\x8b", "<i"),
                 (b"\x8d", "<Q"), (b"\x8e", "<Q"), (b"\x96", "<Q")):
    _CLASS[_c[0]], _WIDTH[_c[0]], _LENGTH_FORMAT[_c[0]] = _LEN_ATOM, struct.calcsize(_fmt), _fmt
#: opcodes without an argument, dispatched to a handler (see _Scanner.handlers)
_HANDLED_OPS = b"()\x85\x86\x87tR\x81\x92Qusae\x90\x91dlbo\x93012\x98"
for _c in _HANDLED_OPS:
    _CLASS[_c] = _HANDLED
_EMPTY_KIND = [0] * 256  # EMPTY_DICT, EMPTY_LIST, EMPTY_SET: inline, the node kind they push
for _c, _kind in ((b"}", _DICT), (b"]", _LIST), (b"\x8f", _SET)):
    _CLASS[_c[0]], _EMPTY_KIND[_c[0]] = _EMPTY, _kind
#: opcodes that build a container, a call's result or a mark's list (counted in ScanStats.containers)
_BUILDS = [False] * 256
for _c in b"()\x85\x86\x87tR\x81\x92QP}]\x8fdl\x91io":
    _BUILDS[_c] = True
#: bytes of Python objects an unpickler allocates per opcode, measured with tracemalloc on the
#: pure-Python unpickler (restricted_load) and rounded up; the slot a value takes in its container is
#: folded into the value's cost. Payload bytes (strings, bytes) are bounded by the byte cap instead.
_COST = [8] * 256  # noqa: the default: a reference pushed (GET, DUP) or nothing
for _codes, _bytes in ((b"KMJGN\x88\x89\x82\x83\x84\x97FIL", 64),  # numbers, None, bools, ...
                       (b"XTUBC\x8a\x8b\x8c\x8d\x8e\x96SV", 64),  # strings and bytes (without payload)
                       (b"r\x94p", 112),  # memo entries (BINPUT's 256 slots are reused: 8)
                       (b"\x8f\x91", 232),  # sets, frozensets
                       (b"}d", 80), (b"]l", 72), (b"(", 64), (b"\x85\x86\x87t", 72), (b")", 8),
                       (b"R\x81\x92oi", 400),  # an object built by a call: a placeholder and its fields
                       (b"QP", 200), (b"c\x93", 64)):
    for _c in _codes:
        _COST[_c] = _bytes
_LOOKAHEAD = 16  # bytes kept buffered past an opcode, so fixed-width arguments need no check


class _Scanner:
    """One pass over one pickle read through `read(n)`; see the module docstring.

    The opcode loop keeps the buffer and position in locals; `base` is the offset of buf[0] in the
    pickle. Only the slow paths (refills, long values, lines, calls, hashed values) are methods.
    """

    def __init__(self, read: Callable[[int], bytes], max_bytes: int, what: str, budget: "Budget") -> None:
        self._read = read
        self.max_bytes = max_bytes
        self.budget = budget
        self.what = what
        self.base = 0
        self.total = 0  # bytes read so far
        self.eof = False
        self.over = False  # more data exists past max_bytes
        self.walked = 0
        self.at = 0  # offset of the last opcode handled outside the fast paths (for messages)

    # -- input ------------------------------------------------------------------------------
    def refuse(self, reason: str, offset: int | None, malformed: bool = False) -> PickleRefused:
        return PickleRefused(reason, offset, self.what, malformed=malformed)

    def _chunk(self) -> bytes:
        if self.eof:
            return b""
        room = self.max_bytes - self.total
        if room <= 0:
            self.over = bool(self._read(1))
            self.eof = True
            return b""
        chunk = self._read(min(_CHUNK, room))
        if not chunk:
            self.eof = True
        self.total += len(chunk)
        return chunk

    def _ended(self, offset: int, where: str) -> PickleRefused:
        if self.over:
            return self.refuse(f"larger than {self.max_bytes:,} bytes", self.max_bytes)
        return self.refuse(f"data ends inside {where} (truncated pickle)", offset, malformed=True)

    def refill(self, buf: bytes, pos: int) -> bytes:
        """buf[pos:] plus the next chunk (the caller's position becomes 0)."""
        self.base += pos
        return buf[pos:] + self._chunk()

    def skip(self, buf: bytes, pos: int, n: int) -> tuple[bytes, int]:
        """Consume n payload bytes that are not all buffered, without keeping them."""
        if self.base + pos + n > self.max_bytes:
            raise self.refuse(f"a value of {n:,} bytes goes past the {self.max_bytes:,}-byte limit",
                              self.base + pos)
        n -= len(buf) - pos
        self.base += len(buf)
        while True:
            chunk = self._chunk()
            if not chunk:
                raise self._ended(self.base, "a value")
            if len(chunk) >= n:
                return chunk, n
            n -= len(chunk)
            self.base += len(chunk)

    def line(self, buf: bytes, pos: int) -> tuple[bytes, bytes, int]:
        """(text up to the newline, buffer, position after it)."""
        nl = buf.find(b"\n", pos)
        if nl >= 0:
            return buf[pos:nl], buf, nl + 1
        parts = [buf[pos:]]
        self.base += len(buf)
        while True:
            chunk = self._chunk()
            if not chunk:
                raise self._ended(self.base, "a text argument")
            nl = chunk.find(b"\n")
            if nl >= 0:
                parts.append(chunk[:nl])
                return b"".join(parts), chunk, nl + 1
            parts.append(chunk)
            self.base += len(chunk)

    # -- hashing costs ----------------------------------------------------------------------
    def hash_cost(self, node: Any, limit: int, at: int) -> int | None:
        """Unfolded node visits hashing `node` costs (None beyond `limit`); hashing stops at mutable
        containers (unhashable) and at frozensets (their members' hashes are stored)."""
        stack, count = [node], 0
        while stack:
            n = stack.pop()
            count += 1
            if count > limit:
                break
            kind = n[0]
            if kind == _TUPLE or kind == _CONTENT:
                stack.extend(n[2])
            elif kind == _FROZENSET:
                count += len(n[2])
        self.walked += count
        if self.walked > MAX_WALK_TOTAL:
            raise self.refuse(f"hashing its keys and members would visit more than {MAX_WALK_TOTAL:,} "
                              "values", at)
        return None if count > limit else count

    def check_hashed(self, node: Any, role: str, at: int) -> None:
        if node[0] > _GLOBAL and self.hash_cost(node, MAX_HASH_NODES, at) is None:
            raise self.refuse(f"a {role} costs more than {MAX_HASH_NODES:,} nested values to hash "
                              "(deep or memo-shared tuples: hash bomb)", at)

    def check_keys(self, items: list, step: int, role: str, at: int) -> None:
        for key in items[::step]:
            if key[0] > _GLOBAL:
                self.check_hashed(key, role, at)

    def check_hashing_call(self, args: Any, at: int) -> None:
        """A hashing constructor (set, frozenset, OrderedDict, Counter, ...) hashes the items of its
        arguments, or each pair's first element: all must be cheap to hash. Dict arguments were
        checked when their keys went in."""
        for arg in args[2] if args[0] == _TUPLE else (args,):
            if arg[0] not in (_TUPLE, _FROZENSET, _CONTENT, _LIST, _SET):
                continue
            for item in arg[2] or ():
                self.check_hashed(item, "member of a set or dict being built", at)
                if (item[0] == _TUPLE or item[0] == _LIST) and item[2]:
                    self.check_hashed(item[2][0], "key of a dict being built", at)

    def check_pid(self, pid: Any, at: int) -> None:
        """A persistent id must be a plain value or a small tuple of plain values (torch: 5 or 6),
        so that torch's and our persistent_load (and the messages they format) stay cheap."""
        stack, count = [pid], 0
        while stack:
            n = stack.pop()
            count += 1
            if count > MAX_PID_NODES or n[0] not in (_ATOM, _STR, _GLOBAL, _TUPLE):
                raise self.refuse(f"a persistent id that is not a tuple of at most {MAX_PID_NODES} "
                                  "plain values", at)
            if n[0] == _TUPLE:
                stack.extend(n[2])

    # -- nodes --------------------------------------------------------------------------------
    def too_deep(self, at: int) -> PickleRefused:
        return self.refuse(f"containers nested more than {MAX_DEPTH} deep", at)

    def grow(self, target: Any, items: list, at: int) -> None:
        """APPEND(S)/SETITEM(S)/ADDITEMS: `items` go into `target` (whatever it is). Mutable
        containers record their children; every node built as a list (containers and objects built
        by a call) records its new depth."""
        if type(target) is list and items:
            if target[0] in _MUTABLE:
                if target[2] is None:
                    target[2] = items[:]
                else:
                    target[2].extend(items)
            depth = 1 + max([i[1] for i in items])
            if depth > target[1]:
                if depth > MAX_DEPTH:
                    raise self.too_deep(at)
                target[1] = depth

    def call(self, func: Any, args: Any, at: int) -> Any:
        """REDUCE / NEWOBJ / INST / OBJ: the node of an object built by calling `func` with `args`."""
        name = func[2] if func[0] == _GLOBAL else None
        if name is None or name in _HASHING:
            self.check_hashing_call(args, at)
        depth = 1 + args[1]
        if depth > MAX_DEPTH:
            raise self.too_deep(at)
        if name is None or name in _CONTENT_HASHED:
            # its hash may follow its arguments' contents *now*: snapshot mutable arguments one level
            flat: list = []
            for a in (args[2] if args[0] == _TUPLE else (args,)):
                if a[0] in _MUTABLE:
                    flat.extend(a[2] or ())
                else:
                    flat.append(a)
            return [_CONTENT, depth, tuple(flat)]
        return [_OPAQUE, depth, None]

    def tuple_of(self, items: list, at: int) -> Any:
        depth = 1 + max([i[1] for i in items], default=0)
        if depth > MAX_DEPTH:
            raise self.too_deep(at)
        return (_TUPLE, depth, tuple(items))

    # -- the opcode loop ------------------------------------------------------------------------
    def run(self) -> ScanStats:
        enabled = gc.isenabled()
        gc.disable()  # the scan allocates many small nodes and no cycle worth collecting meanwhile
        try:
            return self._run()
        finally:
            if enabled:
                gc.enable()

    def malformed(self, exc: Exception, at: int) -> PickleRefused:
        if isinstance(exc, KeyError):
            return self.refuse("a memo index that was never stored", at, malformed=True)
        if isinstance(exc, struct.error) or self.eof and at >= self.total - 1:
            return self._ended(at, "an opcode")
        return self.refuse("malformed opcodes (stack underflow or bad argument)", at, malformed=True)

    def handlers(self, stack: list, marks: list[int], memo: dict) -> list:
        """Handlers for the opcodes without an argument, indexed by opcode byte. One stack and a
        list of mark positions (like the C unpickler), so handlers share them without rebinding."""

        def pop_mark() -> list:
            k = marks.pop()
            items = stack[k:]
            del stack[k:]
            return items

        def mark() -> None:
            if len(marks) >= MAX_DEPTH:
                raise self.refuse(f"marks nested more than {MAX_DEPTH} deep", self.at)
            marks.append(len(stack))

        def tuple_n(n: int) -> Callable[[], None]:
            def build() -> None:
                if len(stack) < n + (marks[-1] if marks else 0):
                    raise IndexError
                items = stack[len(stack) - n:]
                del stack[len(stack) - n:]
                stack.append(self.tuple_of(items, self.at))
            return build

        def tuple1() -> None:
            a = stack[-1]
            d = 1 + a[1]
            if d > MAX_DEPTH:
                raise self.too_deep(self.at)
            stack[-1] = (_TUPLE, d, (a,))

        def tuple2() -> None:
            b = stack.pop()
            a = stack[-1]
            d = 1 + (a[1] if a[1] > b[1] else b[1])
            if d > MAX_DEPTH:
                raise self.too_deep(self.at)
            stack[-1] = (_TUPLE, d, (a, b))

        def empty_tuple() -> None:
            stack.append((_TUPLE, 1, ()))

        def tuple_mark() -> None:
            stack.append(self.tuple_of(pop_mark(), self.at))

        def reduce() -> None:
            args = stack.pop()
            stack[-1] = self.call(stack[-1], args, self.at)

        def newobj_ex() -> None:
            kwargs = stack.pop()
            args = stack.pop()
            stack[-1] = self.call(stack[-1], self.tuple_of([args, kwargs], self.at), self.at)

        def binpersid() -> None:
            self.check_pid(stack[-1], self.at)
            stack[-1] = (_OPAQUE, 1, None)

        def setitems() -> None:
            items = pop_mark()
            self.check_keys(items, 2, "dict key", self.at)
            self.grow(stack[-1], items, self.at)

        def setitem() -> None:
            v = stack.pop()
            k = stack.pop()
            self.check_keys([k], 1, "dict key", self.at)
            self.grow(stack[-1], [k, v], self.at)

        def append() -> None:
            v = stack.pop()
            self.grow(stack[-1], [v], self.at)

        def appends() -> None:
            items = pop_mark()
            self.grow(stack[-1], items, self.at)

        def additems() -> None:
            items = pop_mark()
            self.check_keys(items, 1, "set member", self.at)
            self.grow(stack[-1], items, self.at)

        def frozenset_op() -> None:
            items = pop_mark()
            self.check_keys(items, 1, "frozenset member", self.at)
            node = self.tuple_of(items, self.at)
            stack.append((_FROZENSET, node[1], node[2]))

        def dict_op() -> None:
            items = pop_mark()
            self.check_keys(items, 2, "dict key", self.at)
            node = [_DICT, 1, None]
            self.grow(node, items, self.at)
            stack.append(node)

        def list_op() -> None:
            node = [_LIST, 1, None]
            self.grow(node, pop_mark(), self.at)
            stack.append(node)

        def build() -> None:
            state = stack.pop()
            target = stack[-1]
            if state[1] + 1 > MAX_DEPTH:
                raise self.too_deep(self.at)
            if type(target) is list and state[1] + 1 > target[1]:
                target[1] = state[1] + 1

        def obj() -> None:  # OBJ: class and arguments since the mark
            items = pop_mark()
            stack.append(self.call(items[0], self.tuple_of(items[1:], self.at), self.at))

        def stack_global() -> None:
            name = stack.pop()
            module = stack[-1]
            full = None
            if name[0] == _STR and module[0] == _STR:
                full = (module[2] + b"." + name[2]).decode("utf-8", "replace")
            stack[-1] = (_GLOBAL, 0, full)

        def pop() -> None:
            if len(stack) > (marks[-1] if marks else 0):
                stack.pop()
            else:
                pop_mark()

        def pop_mark_op() -> None:
            pop_mark()

        def dup() -> None:
            stack.append(stack[-1])

        def noop() -> None:
            pass

        table: list = [None] * 256
        for code, handler in ((b"(", mark), (b")", empty_tuple), (b"\x85", tuple1), (b"\x86", tuple2),
                              (b"\x87", tuple_n(3)), (b"t", tuple_mark), (b"R", reduce), (b"\x81", reduce),
                              (b"\x92", newobj_ex), (b"Q", binpersid), (b"u", setitems), (b"s", setitem),
                              (b"a", append), (b"e", appends), (b"\x90", additems), (b"\x91", frozenset_op),
                              (b"d", dict_op), (b"l", list_op), (b"b", build), (b"o", obj),
                              (b"\x93", stack_global), (b"0", pop), (b"1", pop_mark_op), (b"2", dup),
                              (b"\x98", noop)):
            table[code[0]] = handler
        return table

    def _run(self) -> ScanStats:  # noqa: C901 - one flat loop is the point (speed)
        stack: list = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        handlers = self.handlers(stack, marks, memo)
        classes, widths, builds, formats, costs = _CLASS, _WIDTH, _BUILDS, _LENGTH_FORMAT, _COST
        unpack_from = struct.unpack_from
        atom, short, lookahead = _ATOM_NODE, _SHORT_STR, _LOOKAHEAD
        max_opcodes, max_cost = self.budget.opcodes, self.budget.object_bytes
        put1, put4, memoize, get1, get4, str4, str1, atomw, len_atom, handled, empty, empty_kind = \
            _PUT1, _PUT4, _MEMOIZE, _GET1, _GET4, _STR4, _STR1, _ATOMW, _LEN_ATOM, _HANDLED, _EMPTY, _EMPTY_KIND
        opcodes = containers = cost = 0
        buf, pos = self.refill(b"", 0), 0
        end = len(buf)
        try:
            while True:
                if pos + lookahead > end and not self.eof:
                    buf, pos = self.refill(buf, pos), 0
                    end = len(buf)
                    # checked per chunk (and the object budget at every container too)
                    if opcodes > max_opcodes:
                        raise self.refuse(f"more than {MAX_OPCODES:,} opcodes in one file (CPU bomb)", self.base)
                    if cost > max_cost:
                        raise self._too_big(self.base)
                if pos >= end:
                    raise self._ended(self.base + pos, "the opcodes: no STOP")
                op = buf[pos]
                pos += 1
                opcodes += 1
                cost += costs[op]
                cls = classes[op]
                if cls == put4:
                    (n,) = unpack_from("<I", buf, pos)
                    pos += 4
                    memo[n] = stack[-1]
                elif cls == get1:
                    stack.append(memo[buf[pos]])
                    pos += 1
                elif cls == atomw:
                    pos += widths[op]
                    stack.append(atom)
                elif cls == handled:
                    self.at = self.base + pos - 1
                    if builds[op]:
                        containers += 1
                        if cost > max_cost:
                            raise self._too_big(self.at)
                    handlers[op]()
                elif cls == empty:
                    containers += 1
                    if cost > max_cost:
                        raise self._too_big(self.base + pos - 1)
                    stack.append([empty_kind[op], 1, None])
                elif cls == str4 or cls == str1:
                    if cls == str4:
                        (n,) = unpack_from("<I", buf, pos)
                        pos += 4
                    else:
                        n = buf[pos]
                        pos += 1
                    if pos + n <= end:
                        stack.append((_STR, 0, buf[pos:pos + n]) if n <= short else atom)
                        pos += n
                    else:
                        buf, pos = self.skip(buf, pos, n)
                        end = len(buf)
                        stack.append(atom)
                elif cls == put1:
                    memo[buf[pos]] = stack[-1]
                    pos += 1
                elif cls == memoize:
                    memo[len(memo)] = stack[-1]
                elif cls == get4:
                    (n,) = unpack_from("<I", buf, pos)
                    pos += 4
                    stack.append(memo[n])
                elif cls == len_atom:
                    width = widths[op]
                    (n,) = unpack_from(formats[op], buf, pos)
                    pos += width
                    if n < 0:
                        raise self.refuse("negative length", self.base + pos - width - 1, malformed=True)
                    if pos + n <= end:
                        pos += n
                    else:
                        buf, pos = self.skip(buf, pos, n)
                        end = len(buf)
                    stack.append(atom)
                else:
                    pos, buf = self._rare(op, cls, buf, pos, stack, marks, memo)
                    end = len(buf)
                    if pos < 0:
                        if opcodes > max_opcodes:
                            raise self.refuse(f"more than {MAX_OPCODES:,} opcodes in one file (CPU bomb)", self.at)
                        if cost > max_cost:
                            raise self._too_big(self.at)
                        stats = ScanStats(self.base - pos, opcodes, containers, stack[-1][1], cost)
                        self.budget.spend(stats)
                        return stats
                    if builds[op]:
                        containers += 1
                if pos > end:
                    raise self._ended(self.base + end, "an opcode")
        except (IndexError, KeyError, TypeError, ValueError, struct.error) as exc:
            raise self.malformed(exc, self.base + pos - 1) from None

    def _too_big(self, at: int) -> PickleRefused:
        return self.refuse(f"would build more than {MAX_OBJECT_BYTES >> 20} MiB of Python objects in one "
                           "file (memory bomb)", at)

    def _rare(self, op: int, cls: int, buf: bytes, pos: int, stack: list, marks: list[int],
              memo: dict) -> tuple[int, bytes]:
        """Opcodes with a text argument, PROTO, FRAME and STOP; returns (pos, buf), pos negated
        (the end of the pickle) at STOP."""
        self.at = at = self.base + pos - 1
        if cls == _GLOBAL_OP or cls == _INST:
            module, buf, pos = self.line(buf, pos)
            name, buf, pos = self.line(buf, pos)
            func = (_GLOBAL, 0, (module + b"." + name).decode("utf-8", "replace"))
            if cls == _GLOBAL_OP:
                stack.append(func)
            else:  # INST: the class from the lines, arguments since the mark
                k = marks.pop()
                items = stack[k:]
                del stack[k:]
                stack.append(self.call(func, self.tuple_of(items, at), at))
        elif cls == _LINE_ATOM or cls == _GETL or cls == _PUTL or cls == _PERSID:
            text, buf, pos = self.line(buf, pos)
            if cls == _GETL:
                stack.append(memo[int(text)])
            elif cls == _PUTL:
                memo[int(text)] = stack[-1]
            else:
                stack.append((_OPAQUE, 1, None) if cls == _PERSID else _ATOM_NODE)
        elif cls == _PROTO:
            if buf[pos] > 5:
                raise self.refuse(f"unsupported pickle protocol {buf[pos]}", at, malformed=True)
            pos += 1
        elif cls == _FRAME:
            pos += 8
        elif cls == _STOP:
            if len(stack) <= (marks[-1] if marks else 0):
                raise IndexError
            return -pos, buf
        else:
            raise self.refuse(f"unknown opcode 0x{op:02x}", at, malformed=True)
        return pos, buf


# ------------------------------------------------------------------------------------------- API


@dataclass
class Budget:
    """What is left for one input file: every pickle it holds (the members of a zip, the five
    pickles of a legacy torch file, torch.save blobs nested in a plain pickle) draws on one budget,
    so splitting a bomb over many pickles gains nothing."""

    opcodes: int = MAX_OPCODES
    object_bytes: int = MAX_OBJECT_BYTES

    def spend(self, stats: ScanStats) -> None:
        self.opcodes -= stats.opcodes
        self.object_bytes -= stats.object_bytes


def scan_bytes(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_PICKLE_BYTES,
               budget: Budget | None = None, what: str = "pickle") -> ScanStats:
    """Scan the first pickle in `data`; PickleRefused when it is hostile."""
    return _Scanner(io.BytesIO(data).read, max_bytes, what, budget or Budget()).run()


def scan_stream(file: IO[bytes], *, max_bytes: int = MAX_PICKLE_BYTES, budget: Budget | None = None,
                what: str = "pickle") -> ScanStats:
    """Scan the pickle that starts at `file`'s current position, then seek back there, so the
    unpickler reads the very same bytes. The file must be seekable."""
    start = file.tell()
    try:
        return _Scanner(file.read, max_bytes, what, budget or Budget()).run()
    finally:
        file.seek(start)


def is_pickle_member(name: str) -> bool:
    """Zip members an unpickler reads: torch's data.pkl, TorchScript's constants.pkl, any *.pkl."""
    return name.endswith(".pkl")


def scan_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, max_bytes: int = MAX_MEMBER_BYTES,
                    budget: Budget | None = None, what: str | None = None) -> ScanStats:
    """Scan one pickle member of an open zip archive by streaming it (never inflated whole).

    The size the archive declares is checked first: above `max_bytes`, or a deflated member
    claiming more than MAX_MEMBER_RATIO times its compressed size, is refused without inflating;
    inflation never goes past `max_bytes` + 1 whatever the header says."""
    what = what or f"zip member {bounded_repr(info.filename, 120)}"
    if info.file_size > max_bytes:
        raise PickleRefused(f"declares {info.file_size:,} bytes (limit {max_bytes:,})", None, what)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(info.compress_size, 1) * MAX_MEMBER_RATIO:
        raise PickleRefused(f"declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                            "(zip bomb)", None, what)
    with zf.open(info) as member:
        return _Scanner(member.read, max_bytes, what, budget or Budget()).run()


def scan_zip(zf: zipfile.ZipFile, *, max_bytes: int = MAX_MEMBER_BYTES,
             budget: Budget | None = None) -> dict[str, ScanStats]:
    """Scan every pickle member of an open archive (torch.load reads `*/data.pkl`, TorchScript
    `constants.pkl` too) against one budget; {member: stats}. PickleRefused names the first hostile
    member; zipfile errors (a damaged archive) pass through to the caller."""
    budget = budget or Budget()
    return {info.filename: scan_zip_member(zf, info, max_bytes=max_bytes, budget=budget)
            for info in zf.infolist() if is_pickle_member(info.filename)}


_LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, the storage keys


def scan_torch_stream(file: IO[bytes], *, max_bytes: int = MAX_MEMBER_BYTES, budget: Budget | None = None,
                      what: str = "torch file") -> dict[str, ScanStats]:
    """Scan what `torch.load(file, weights_only=True)` would unpickle, from the current position:
    every pickle member of a zip, the five pickles of a legacy (pre-1.6) file, or the one pickle of
    anything else (torch's legacy loader reads one pickle first and gives up if it is not the
    magic number). A tar archive (pre-0.4 torch) is refused: its members are not scanned. The
    position is restored."""
    budget = budget or Budget()
    start = file.tell()
    try:
        head = file.read(512)
        file.seek(start)
        if head.startswith(b"PK"):
            with zipfile.ZipFile(file) as zf:
                return scan_zip(zf, max_bytes=max_bytes, budget=budget)
        if len(head) > 262 and head[257:262] == b"ustar":
            raise PickleRefused("a tar archive (pre-0.4 torch checkpoint): not unpickled", None, what)
        stats: dict[str, ScanStats] = {}
        for i in range(_LEGACY_PICKLES if head.startswith(LEGACY_MAGIC) else 1):
            one = scan_stream(file, max_bytes=max_bytes, budget=budget, what=f"{what}, pickle {i + 1}")
            stats[f"pickle {i + 1}"] = one
            file.seek(one.nbytes, io.SEEK_CUR)
        return stats
    finally:
        file.seek(start)


def scan_torch_bytes(data: bytes, *, budget: Budget | None = None, what: str = "torch.save blob"
                     ) -> dict[str, ScanStats]:
    """`scan_torch_stream` of bytes in memory (a torch.save blob nested in a plain pickle)."""
    return scan_torch_stream(io.BytesIO(data), budget=budget, what=what)


def scan_torch_file(path: str, *, max_bytes: int = MAX_MEMBER_BYTES, budget: Budget | None = None
                    ) -> dict[str, ScanStats]:
    """Scan a file on disk before `torch.load(path, weights_only=True)` (see `scan_torch_stream`).
    OSError and zipfile.BadZipFile pass through: the caller reports an unreadable or damaged file."""
    with open(path, "rb") as f:
        return scan_torch_stream(f, max_bytes=max_bytes, budget=budget, what=bounded_repr(path, 200))


__all__ = ["MAX_DEPTH", "MAX_HASH_NODES", "MAX_MEMBER_BYTES", "MAX_OBJECT_BYTES", "MAX_OPCODES",
           "MAX_PICKLE_BYTES", "Budget", "PickleRefused", "ScanStats", "bounded_repr", "is_pickle_member",
           "scan_bytes", "scan_stream", "scan_torch_bytes", "scan_torch_file", "scan_torch_stream",
           "scan_zip", "scan_zip_member"]
