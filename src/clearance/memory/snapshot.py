"""Case memory saved as data and read back: what makes a restart take seconds, not a rebuild.

A snapshot is one ``.npz`` file (numpy's zip of arrays, stored uncompressed): numbers in
arrays, each case's repeated strings (tool, domain, shape, outcome, identifiers) as codes into a
list of the distinct ones, request ids as lines of text, the rest (counters, the featuriser's
knowledge) as JSON text, each partition's index as its exact ``(keys, vectors)`` or usearch's own
saved HNSW graph, and the engine's drift streams (:mod:`clearance.memory.drift`) at their own
position. It is read in place (a memory map, or the bytes a database returned): every member's
CRC is checked, its ``.npy`` header parsed, and arrays of objects refused, so nothing in it can
run code, and one copy is made of what memory keeps, not three of everything. Its ``meta`` says
which memory settings and which audit chain position (seq and hash) it reflects; whoever loads it
checks both (:func:`read_meta`) before trusting the rest. A snapshot that does not hold together
raises :class:`SnapshotError`.

Pure: bytes in, bytes out. Where a snapshot lives is the engine's business (``engine/snapshots.py``).
"""

from __future__ import annotations

import gc
import io
import json
import struct
import zipfile
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import numpy as np

from clearance._version import __version__
from clearance.memory.cases import CaseMemory, _Case, _Columns
from clearance.memory.drift import DriftMonitor, DriftSettings, StreamState
from clearance.memory.features import DIM, Featuriser, _Stats
from clearance.memory.index import dump_index, restore_index
from clearance.memory.reliability import NoiseModel, ReviewerModel

__all__ = ["FORMAT", "SnapshotError", "dump", "load", "read_meta", "settings_of"]

#: Bumped whenever what a snapshot holds changes meaning. A snapshot is also tied to the
#: clearance version that wrote it: memory's features may change between releases.
FORMAT = 2
_NAIVE = -(2**31)  # the offset column's mark for a naive time


class SnapshotError(ValueError):
    """The snapshot is unreadable, or is not of this memory (settings, version)."""


def settings_of(memory: CaseMemory) -> dict[str, Any]:
    """What a snapshot must agree with to be loaded into ``memory``."""
    return {"format": FORMAT, "version": __version__, "dim": DIM, "max_waiting": memory.max_waiting,
            "wait_seconds": memory.wait}  # fmt: skip


def _text(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode(), dtype=np.uint8)


def _untext(arr: np.ndarray) -> Any:
    return json.loads(arr.tobytes())


def _lines(values: Sequence[str]) -> np.ndarray:
    """Strings as lines of UTF-8 (splitting text is many times faster than parsing JSON)."""
    if any("\n" in v or "\r" in v for v in values):  # not an id the model accepts; JSON then
        return _text(list(values))
    return np.frombuffer(("\n".join(values) + "\n").encode(), dtype=np.uint8) if values else _text([])


def _unlines(arr: np.ndarray) -> list[str]:
    raw = arr.tobytes()
    if raw[:1] == b"[":
        return list(_untext(arr))
    return raw.decode().split("\n")[:-1]


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """A column of few distinct values as codes into the list of them (shared when read back)."""
    distinct: dict[Any, int] = {}
    codes = [distinct.setdefault(v, len(distinct)) for v in values]
    return np.asarray(codes, dtype=np.int32 if len(distinct) < 2**31 else np.int64), list(distinct)


def _uncodes(codes: np.ndarray, distinct: list[Any]) -> list[Any]:
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(distinct)):
        raise SnapshotError("snapshot's codes point outside their values")
    return list(map(distinct.__getitem__, codes.tolist()))  # in C: a third of a list comprehension's time


def _put_pairs(arrays: dict[str, np.ndarray], name: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """(kind, value) pairs as kind codes and value lines; returns the kinds (for the JSON state)."""
    arrays[f"{name}_kind"], kinds = _codes([p[0] for p in pairs])
    arrays[f"{name}_value"] = _lines([p[1] for p in pairs])
    return kinds


def _get_pairs(a: _Snapshot, name: str, kinds: list[str]) -> list[tuple[str, str]]:
    values = _unlines(a[f"{name}_value"])
    found = _uncodes(a[f"{name}_kind"], kinds)
    if len(values) != len(found):
        raise SnapshotError(f"snapshot's {name} do not add up")
    return list(zip(found, values))


def _numbers(values: Sequence[float]) -> np.ndarray:
    """Counts as int64 when they are all integers (read back as ints), else float64."""
    arr = np.asarray(values)
    return arr if arr.dtype in (np.int64, np.float64) else np.asarray(values, dtype=np.float64)


def _unoptional(values: np.ndarray, has: np.ndarray) -> list[float | None]:
    if values.shape != has.shape:
        raise SnapshotError("snapshot's optional columns do not add up")
    if has.all():
        return values.tolist()
    out = values.astype(object)  # Python floats, made in C
    out[~has] = None
    return out.tolist()  # type: ignore[no-any-return]


def _pairs(counter: Counter[Any] | dict[Any, Any]) -> list[list[Any]]:
    return [[k, v] for k, v in counter.items()]


def _optional(values: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    has = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    return np.fromiter((0.0 if v is None else v for v in values), dtype=np.float64, count=len(values)), has


def dump(memory: CaseMemory, drift: DriftMonitor | None = None) -> bytes:
    """``memory`` as snapshot bytes (it is locked meanwhile, so the state is one moment's), with
    the drift streams of ``drift`` when given (a copy: they are read, not locked)."""
    with memory._lock, _no_gc():
        memory._flush()
        arrays: dict[str, np.ndarray] = {}
        f = memory.features
        cases = list(memory._cases.values())
        c = list(zip(*cases)) if cases else [()] * len(_Case._fields)
        col = dict(zip(_Case._fields, c))
        times = col["decided_at"]
        offsets = [_NAIVE if t.tzinfo is None else int(t.utcoffset().total_seconds()) for t in times]  # type: ignore[union-attr]
        epoch, us = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(microseconds=1)
        arrays["case_us"] = np.asarray([((t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t) - epoch) // us
                                        for t in times], dtype=np.int64)  # fmt: skip
        arrays["case_offset"] = np.asarray(offsets, dtype=np.int64)
        for name in ("value", "bad", "severity", "cost"):
            arrays[f"case_{name}"], arrays[f"case_has_{name}"] = _optional(list(col[name]))
        arrays["case_row"] = np.asarray(col["row"], dtype=np.int64)
        arrays["case_weight"] = np.asarray(col["weight"], dtype=np.float64)
        arrays["case_risk"] = np.asarray(col["risk"], dtype=np.float64)
        arrays["case_twin"] = np.asarray(col["twin"], dtype=np.uint64)
        arrays["case_real"] = np.asarray(col["real"], dtype=bool)
        arrays["case_approved"] = np.asarray(col["approved"], dtype=bool)
        waiting = [i for i, v in enumerate(col["vector"]) if v is not None]
        arrays["case_waiting"] = np.asarray(waiting, dtype=np.int64)
        arrays["case_vectors"] = (np.stack([col["vector"][i] for i in waiting]).astype(np.float32) if waiting
                                  else np.empty((0, DIM), dtype=np.float32))  # fmt: skip
        arrays["case_request_id"] = _lines(col["request_id"])
        distinct: dict[str, list[Any]] = {}
        for name in ("tool", "domain", "shape", "outcome", "ids"):
            arrays[f"case_{name}_code"], distinct[name] = _codes(col[name])
        # The distinct identifier tuples, as codes into the distinct (kind, value) pairs.
        ids = distinct.pop("ids")
        arrays["ids_count"] = np.asarray([len(t) for t in ids], dtype=np.int64)
        arrays["ids_pair"], id_pairs = _codes([p for t in ids for p in t])
        distinct["id_kinds"] = _put_pairs(arrays, "id_pairs", id_pairs)
        order = {rid: i for i, rid in enumerate(col["request_id"])}
        recent = [order.get(rid, -1) for rid in memory._recent]
        arrays["recent"] = np.asarray(recent, dtype=np.int64)
        cols = memory._cols
        for name in ("t", "w", "bad", "tool", "domain"):
            arrays[f"col_{name}"] = getattr(cols, name)[: cols.n].copy()
        keys, counts, rows = [], [], []
        for key, m in memory._members.items():
            keys.append(key)
            members = [m] if isinstance(m, int) else m
            counts.append(len(members))
            rows.extend(members)
        arrays["member_key"] = np.asarray(keys, dtype=np.int64)
        arrays["member_count"] = np.asarray(counts, dtype=np.int64)
        arrays["member_rows"] = np.asarray(rows, dtype=np.int64)
        proto = list(memory._proto_of.items())
        arrays["proto_pid"] = np.asarray([p[0][0] for p in proto], dtype=np.int64)
        arrays["proto_sig"] = np.asarray([p[0][1] for p in proto], dtype=np.uint64)
        arrays["proto_key"] = np.asarray([p[1] for p in proto], dtype=np.int64)
        parts = []
        for i, (part, index) in enumerate(memory._parts.items()):
            meta, keys_arr, data = dump_index(index)
            parts.append({"part": list(part), "index": meta})
            arrays[f"index_{i}_keys"], arrays[f"index_{i}_data"] = keys_arr, data
        noise = memory.noise
        state = {
            "cases": distinct,
            # ids of calls no longer among the cases (none, as memory forgets them): kept by name
            "recent_gone": [rid for rid, at in zip(memory._recent, recent) if at < 0],
            "names": list(memory._names),
            "part_ids": [[list(p), i] for p, i in memory._part_ids.items()],
            "parts": parts,
            "next_key": memory._next_key, "all": memory._all, "revived": memory.revived,
            "counters": {name: _pairs(getattr(memory, name)) for name in _COUNTERS},
            "pair_counters": {name: [[k[0], k[1], v] for k, v in getattr(memory, name).items()] for name in _PAIR_COUNTERS},
            "reviewer": [getattr(memory.reviewer, s) for s in ReviewerModel.__slots__],
            "noise": {"big": list(noise.big), "limit": noise.limit, "fresh": noise._fresh, "rate": noise._rate},
            "features": {
                "good_ids": _put_pairs(arrays, "good_ids", list(f.good_ids)),
                "bad_ids": _put_pairs(arrays, "bad_ids", list(f.bad_ids)),
                "tool_values": [[t, s.n, s.mean, s.m2] for t, s in f.tool_values.items()],
                "actor_values": [[a, t, s.n, s.mean, s.m2] for (a, t), s in f.actor_values.items()],
                "keysets": [[t, [[sorted(ks), n] for ks, n in c.items()]] for t, c in f.keysets.items()],
                "tokens": [[t, len(c)] for t, c in f.tokens.items()],  # each tool's tokens, in turn
                "calls": _pairs(f.calls),
            },
        }  # fmt: skip
        arrays["good_ids_n"] = _numbers(list(f.good_ids.values()))
        arrays["bad_ids_n"] = _numbers(list(f.bad_ids.values()))
        arrays["tokens"] = _lines([tok for c in f.tokens.values() for tok in c])
        arrays["tokens_n"] = _numbers([n for c in f.tokens.values() for n in c.values()])
        arrays["noise_key"] = np.asarray(list(noise.groups), dtype=np.uint64)
        arrays["noise_group"] = np.asarray(list(noise.groups.values()), dtype=np.float64).reshape(-1, 2)
        arrays["state"] = _text(state)
        arrays["meta"] = _text({**settings_of(memory), "cursor": memory.cursor, "cursor_hash": memory.cursor_hash,
                                "cases": len(cases), "learnt": cols.n})  # fmt: skip
    if drift is not None:
        arrays["drift"] = _text({"settings": _drift_settings(drift.settings), "cursor": drift.cursor,
                                 "streams": [[scope, value, st.bad, st.n, st.s, st.run_bad, st.run_n]
                                             for (scope, value), st in drift.streams.items()]})  # fmt: skip
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


_COUNTERS = ("_labelled", "_decisions", "_labelled_family", "_bad_family", "_bad", "_labelled_shape", "_bad_shape")
_PAIR_COUNTERS = ("_labelled_ts", "_bad_ts")


def _drift_settings(settings: DriftSettings) -> list[Any]:
    return [settings.warmup, settings.min_shift, settings.threshold, settings.enabled]


class _Snapshot:
    """The members of a snapshot read in place from ``data`` (bytes, or a memory map of the
    file): zip's directory for where each member is, its CRC checked on first read, numpy's
    ``.npy`` header for its shape and type. An array returned is a read-only view of ``data``:
    whoever keeps one copies it."""

    def __init__(self, data: Any) -> None:
        self.view = memoryview(data).cast("B")
        try:
            with zipfile.ZipFile(_Tail(self.view)) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
            raise SnapshotError(f"unreadable snapshot: {exc}") from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                raise SnapshotError(f"unreadable snapshot: member {info.filename!r} is not a stored array")
            self.members[info.filename[:-4]] = info
        self.files = list(self.members)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def __getitem__(self, name: str) -> np.ndarray:
        info = self.members.get(name)
        if info is None:
            raise SnapshotError(f"unreadable snapshot: no {name!r}")
        view, at = self.view, info.header_offset
        local = bytes(view[at : at + 30])
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise SnapshotError(f"unreadable snapshot: {name!r} is not where the directory says")
        start = at + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        body = view[start : start + info.compress_size]
        if len(body) != info.compress_size or zlib.crc32(body) != info.CRC:
            raise SnapshotError(f"unreadable snapshot: {name!r} is damaged (CRC)")
        try:
            head = io.BytesIO(bytes(body[: min(len(body), 1 << 16)]))
            version = np.lib.format.read_magic(head)
            fmt = np.lib.format
            shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(head)
            if dtype.hasobject:
                raise ValueError("an array of objects")
            count = int(np.prod(shape, dtype=np.int64))
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=head.tell())
        except Exception as exc:
            raise SnapshotError(f"unreadable snapshot: {name!r}: {exc}") from None
        return arr.reshape(shape, order="F" if fortran else "C")


class _Tail(io.RawIOBase):
    """A file over a memoryview, for :mod:`zipfile` to read the directory from (small reads)."""

    def __init__(self, view: memoryview) -> None:
        self.view, self.at = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.at = offset if whence == 0 else (self.at + offset if whence == 1 else len(self.view) + offset)
        if self.at < 0:
            raise OSError("seek before the start")
        return self.at

    def tell(self) -> int:
        return self.at

    def readinto(self, buffer: Any) -> int:
        chunk = self.view[self.at : self.at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.at += len(chunk)
        return len(chunk)


def read_meta(data: Any) -> dict[str, Any]:
    """The snapshot's settings and chain position (``cursor``, ``cursor_hash``), read alone."""
    try:
        meta = _untext(_Snapshot(data)["meta"])
    except SnapshotError:
        raise
    except Exception as exc:  # a damaged member: zip or JSON errors
        raise SnapshotError(f"unreadable snapshot: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("cursor"), int):
        raise SnapshotError("unreadable snapshot: no chain position")
    return meta


def load(data: Any, memory: CaseMemory, drift: DriftSettings | None = None) -> DriftMonitor | None:
    """Make ``memory`` the memory the snapshot (bytes, or a memory map of its file) saved.
    Raises :class:`SnapshotError` (leaving ``memory`` empty) when it is unreadable or of other
    settings. Returns the drift streams it holds for ``drift`` settings, when it holds them for
    those settings at a chain position no later than memory's (the chain's hash at memory's
    position then vouches for theirs); else None, and the engine reads them from the log."""
    meta = read_meta(data)
    want = settings_of(memory)
    differs = sorted(k for k in want if meta.get(k) != want[k])
    if differs:
        raise SnapshotError("snapshot of other settings: " + ", ".join(f"{k} {meta.get(k)!r} (now {want[k]!r})" for k in differs))
    with memory._lock, _no_gc():
        try:
            snap = _Snapshot(data)
            _restore(memory, meta, snap)
            return _restore_drift(snap, drift, memory.cursor)
        except SnapshotError:
            memory._clear()
            raise
        except Exception as exc:  # anything that does not hold together
            memory._clear()
            raise SnapshotError(f"unreadable snapshot: {type(exc).__name__}: {exc}") from None


def _restore_drift(snap: _Snapshot, settings: DriftSettings | None, cursor: int) -> DriftMonitor | None:
    if settings is None or "drift" not in snap:
        return None
    d = _untext(snap["drift"])
    if d["settings"] != _drift_settings(settings) or not 0 <= int(d["cursor"]) <= cursor:
        return None
    monitor = DriftMonitor(settings, cursor=int(d["cursor"]))
    for scope, value, bad, n, s, run_bad, run_n in d["streams"]:
        monitor.streams[(scope, value)] = StreamState(int(bad), int(n), float(s), int(run_bad), int(run_n))
    return monitor


def _restore(memory: CaseMemory, meta: dict[str, Any], a: _Snapshot) -> None:
    memory._clear()
    s = _untext(a["state"])
    f = memory.features = Featuriser()
    fs = s["features"]
    for name in ("good_ids", "bad_ids"):
        keys, counts = _get_pairs(a, name, fs[name]), a[f"{name}_n"].tolist()
        if len(keys) != len(counts):
            raise SnapshotError(f"snapshot's {name} do not add up")
        setattr(f, name, Counter(dict(zip(keys, counts))))
    f.tool_values = defaultdict(_Stats)
    for t, n, mean, m2 in fs["tool_values"]:
        f.tool_values[t] = _stats(n, mean, m2)
    f.actor_values = defaultdict(_Stats)
    for actor, t, n, mean, m2 in fs["actor_values"]:
        f.actor_values[(actor, t)] = _stats(n, mean, m2)
    f.keysets = defaultdict(Counter, {t: Counter({frozenset(ks): n for ks, n in c}) for t, c in fs["keysets"]})
    tokens, counts = _unlines(a["tokens"]), a["tokens_n"].tolist()
    if len(tokens) != len(counts) or sum(n for _, n in fs["tokens"]) != len(tokens):
        raise SnapshotError("snapshot's tokens do not add up")
    f.tokens = defaultdict(Counter)
    at = 0
    for t, count in fs["tokens"]:
        f.tokens[t] = Counter(dict(zip(tokens[at : at + count], counts[at : at + count])))
        at += count
    f.calls = Counter(dict(fs["calls"]))

    distinct = s["cases"]
    pairs = _uncodes(a["ids_pair"], _get_pairs(a, "id_pairs", distinct["id_kinds"]))
    ends = np.cumsum(a["ids_count"]).tolist()
    if (ends[-1] if ends else 0) != len(pairs):
        raise SnapshotError("snapshot's identifiers do not add up")
    distinct["ids"] = [tuple(pairs[start:end]) for start, end in zip([0, *ends], ends)]
    request_ids = _unlines(a["case_request_id"])
    n = len(request_ids)
    if n != meta["cases"] or a["case_us"].shape[0] != n:
        raise SnapshotError("snapshot's cases do not add up")
    cs = {}
    for name in ("tool", "domain", "shape", "outcome", "ids"):
        cs[name] = _uncodes(a[f"case_{name}_code"], distinct[name])
        if len(cs[name]) != n:
            raise SnapshotError("snapshot's cases do not add up")
    vectors: list[np.ndarray | None] = [None] * n
    waiting = a["case_vectors"].copy()  # the rows are kept: out of the file's memory map
    for i, v in zip(a["case_waiting"].tolist(), waiting):
        vectors[i] = v
    opt = {name: _unoptional(a[f"case_{name}"], a[f"case_has_{name}"]) for name in ("value", "bad", "severity", "cost")}
    zones: dict[int, timezone] = {0: timezone.utc}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    times = []
    offsets = a["case_offset"]
    micros = a["case_us"]
    if not offsets.any() and (not micros.size or int(np.abs(micros).max()) < 2**32 * 10**6):
        # All UTC, the usual case. A float of seconds before 2106 is within a quarter of a
        # microsecond of the exact time, which fromtimestamp rounds to: the same datetimes, and
        # about half the cost of adding a timedelta to the epoch for each.
        at, utc = datetime.fromtimestamp, timezone.utc
        times = list(map(at, (micros / 1e6).tolist(), repeat(utc, n)))
    elif not offsets.any():
        times = [epoch + timedelta(0, 0, us) for us in micros.tolist()]
    for us, off in zip(a["case_us"].tolist(), offsets.tolist()) if offsets.any() else ():
        t = epoch + timedelta(microseconds=us)
        if off == _NAIVE:
            times.append(t.replace(tzinfo=None))
        else:
            zone = zones.get(off) or zones.setdefault(off, timezone(timedelta(seconds=off)))
            times.append(t.astimezone(zone))
    rows = a["case_row"].tolist()
    columns = zip(request_ids, cs["tool"], cs["domain"], times, cs["ids"], opt["value"], vectors, cs["shape"], rows,
                  opt["bad"], a["case_weight"].tolist(), cs["outcome"], opt["severity"], opt["cost"],
                  a["case_real"].tolist(), a["case_risk"].tolist(), a["case_twin"].tolist(),
                  a["case_approved"].tolist())  # fmt: skip
    memory._cases = dict(zip(request_ids, columns))
    if len(memory._cases) != n:
        raise SnapshotError("snapshot's cases repeat a request id")

    cols = memory._cols = _Columns()
    learnt = int(meta["learnt"])
    cap = max(1024, 1 << max(learnt - 1, 0).bit_length())
    for name in ("t", "w", "bad", "tool", "domain"):
        src = a[f"col_{name}"]
        if src.shape[0] != learnt:
            raise SnapshotError("snapshot's columns do not add up")
        arr = np.zeros(cap, dtype=getattr(cols, name).dtype)
        arr[:learnt] = src
        setattr(cols, name, arr)
    cols.n = learnt
    row_case: list[tuple[Any, ...]] = [()] * learnt
    for case in memory._cases.values():
        if case[8] >= 0:
            row_case[case[8]] = case
    if any(not c for c in row_case):
        raise SnapshotError("snapshot's learnt cases do not add up")
    memory._row_case = row_case
    recent = a["recent"]
    if recent.size and (int(recent.max()) >= n or int(recent.min()) < -1):
        raise SnapshotError("snapshot's recent calls point outside its cases")
    if s["recent_gone"]:
        gone = iter(s["recent_gone"])
        memory._recent = deque(request_ids[i] if i >= 0 else next(gone) for i in recent.tolist())
    else:
        memory._recent = deque(map(request_ids.__getitem__, recent.tolist()))
    memory._names = {name: i for i, name in enumerate(s["names"])}
    members: dict[int, int | list[int]] = {}
    flat = a["member_rows"].tolist()
    at = 0
    for key, count in zip(a["member_key"].tolist(), a["member_count"].tolist()):
        members[key] = flat[at] if count == 1 else flat[at : at + count]
        at += count
    memory._members = members
    memory._proto_of = dict(zip(zip(a["proto_pid"].tolist(), a["proto_sig"].tolist()), a["proto_key"].tolist()))
    memory._part_ids = {tuple(p): i for p, i in s["part_ids"]}  # type: ignore[misc]
    memory._parts = {}
    for i, part in enumerate(s["parts"]):
        memory._parts[tuple(part["part"])] = restore_index(part["index"], a[f"index_{i}_keys"], a[f"index_{i}_data"])  # type: ignore[index]
    memory._next_key, memory._all, memory.revived = s["next_key"], s["all"], s["revived"]
    for name in _COUNTERS:
        setattr(memory, name, Counter(dict(s["counters"][name])))
    for name in _PAIR_COUNTERS:
        setattr(memory, name, Counter({(t, sh): v for t, sh, v in s["pair_counters"][name]}))
    for slot, value in zip(ReviewerModel.__slots__, s["reviewer"]):
        setattr(memory.reviewer, slot, value)
    noise = memory.noise = NoiseModel(s["noise"]["limit"])
    groups = a["noise_group"]
    if groups.shape != (a["noise_key"].shape[0], 2):
        raise SnapshotError("snapshot's noise groups do not add up")
    noise.groups = {k: g for k, g in zip(a["noise_key"].tolist(), groups.tolist())}
    noise.big = {k: noise.groups[k] for k in s["noise"]["big"]}
    noise._fresh, noise._rate = s["noise"]["fresh"], s["noise"]["rate"]
    memory.cursor, memory.cursor_hash = int(meta["cursor"]), meta["cursor_hash"]


@contextmanager
def _no_gc() -> Iterator[None]:
    """The collector paused: a load makes millions of objects, none of them garbage, and each
    generation-2 pass on the way would walk them all again (it doubled the load time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _stats(n: int, mean: float, m2: float) -> _Stats:
    st = _Stats()
    st.n, st.mean, st.m2 = n, mean, m2
    return st
