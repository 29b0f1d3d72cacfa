"""EMULATED: reading the Kubernetes protobuf encoding of request bodies, for the few kinds
the real ``kubectl`` sends that way to the emulated API server (:mod:`lab.apiserver`).

client-go's generated clients prefer protobuf for built-in kinds (``gentype``
``PrefersProtobuf``, ``rest.Request.UseProtobufAsDefault``), so ``kubectl create configmap``
(1.32 and 1.36) POSTs ``Content-Type: application/vnd.kubernetes.protobuf``. The format
(apimachinery ``pkg/runtime/serializer/protobuf/protobuf.go``): the magic ``k8s\\x00``, then a
``runtime.Unknown`` message (``typeMeta`` 1 = {``apiVersion`` 1, ``kind`` 2}, ``raw`` 2 = the
object's own message, ``contentEncoding`` 3, ``contentType`` 4), the object's message as
``k8s.io/api/core/v1/generated.proto`` and apimachinery ``meta/v1/generated.proto`` number
its fields. The schemas below cover ConfigMap, Secret and Namespace (what ``kubectl create
configmap|secret|namespace`` send) with the ObjectMeta fields a client sets; other kinds are
refused with 415 by the caller. Unknown field numbers are skipped, as protobuf readers do.
Only decoding: the server answers JSON (the client accepts it; its Accept lists JSON after
protobuf).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

MAGIC = b"k8s\x00"


class ProtoError(ValueError):
    """A body that is not the Kubernetes protobuf encoding of a supported kind."""


# A schema maps a field number to (JSON name, type); types: "string", "bytes", "int",
# "bool", "time", "strings" (repeated string), "map" (string -> string), "bytesmap" (string ->
# bytes, as base64 in JSON), or a nested schema (dict).
Schema = dict[int, tuple[str, Any]]

OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    14: ("finalizers", "strings"),
}
KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "ConfigMap"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    ("v1", "Namespace"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", "strings")}),
        3: ("status", {1: ("phase", "string")}),
    },
}
UNKNOWN: Schema = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}), 2: ("raw", "bytes")}
TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtoError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message: varints as ints, length-delimited
    fields as bytes; fixed 32/64-bit fields as ints. Raises :class:`ProtoError` on a
    truncated or malformed message (groups are not used by Kubernetes and are refused)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            v, i = _varint(buf, i)
            out.append((num, v))
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtoError("truncated length-delimited field")
            out.append((num, buf[i : i + n]))
            i += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if i + size > len(buf):
                raise ProtoError("truncated fixed field")
            out.append((num, int.from_bytes(buf[i : i + size], "little")))
            i += size
        else:
            raise ProtoError(f"unsupported wire type {wire}")
    return out


def _as_bytes(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise ProtoError("expected a length-delimited field")
    return v


def _as_int(v: int | bytes) -> int:
    if not isinstance(v, int):
        raise ProtoError("expected a varint field")
    return v


def decode(buf: bytes, schema: Schema) -> dict[str, Any]:
    """One message as a JSON-shaped dict per ``schema``, empty values left out (as the JSON
    encoding omits them). Raises :class:`ProtoError`."""
    out: dict[str, Any] = {}
    for num, raw in fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if isinstance(typ, dict):
            value: Any = decode(_as_bytes(raw), typ)
            if value:
                out[name] = value
        elif typ == "string":
            if raw:
                out[name] = _as_bytes(raw).decode()
        elif typ == "bytes":
            out[name] = _as_bytes(raw)
        elif typ == "int":
            if raw:
                out[name] = _as_int(raw)
        elif typ == "bool":
            out[name] = bool(_as_int(raw))
        elif typ == "time":
            t = decode(_as_bytes(raw), TIME)
            if t.get("seconds"):
                stamp = dt.datetime.fromtimestamp(t["seconds"], dt.UTC)
                out[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif typ == "strings":
            out.setdefault(name, []).append(_as_bytes(raw).decode())
        elif typ in ("map", "bytesmap"):
            entry = dict(fields(_as_bytes(raw)))
            key = _as_bytes(entry.get(1, b"")).decode()
            val = _as_bytes(entry.get(2, b""))
            out.setdefault(name, {})[key] = base64.b64encode(val).decode() if typ == "bytesmap" else val.decode()
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A whole request body (``k8s\\x00`` + ``runtime.Unknown``) as the JSON object it
    stands for, ``apiVersion`` and ``kind`` included. Raises :class:`ProtoError` for a body
    without the magic, of a kind without a schema here (the message names it), or malformed;
    ``UnicodeDecodeError`` (a ``ValueError``) for strings that are not UTF-8."""
    if not body.startswith(MAGIC):
        raise ProtoError("the body does not start with the protobuf magic number k8s\\x00")
    unknown = decode(body[len(MAGIC) :], UNKNOWN)
    tm = unknown.get("typeMeta", {})
    api_version, kind = tm.get("apiVersion", ""), tm.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise ProtoError(
            f"the emulated API server reads protobuf only for {sorted(k for _, k in KINDS)}, not {api_version}/{kind}"
        )
    obj = decode(unknown.get("raw", b""), schema)
    return {"apiVersion": api_version, "kind": kind, **obj}
