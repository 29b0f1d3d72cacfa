"""EMULATED: the generic request machinery of kube-apiserver that the emulated API server
(:mod:`lab.apiserver`) needs to answer the real ``kubectl``: ``Status`` errors, content
negotiation, field and label selectors, list paging tokens, object name and key validation,
and the human durations of table cells. Pure functions, no I/O.

Each behaviour follows the upstream source named in its docstring (kubernetes/apimachinery
and kubernetes/apiserver, v0.32/v0.36, the staging repositories of Kubernetes 1.32/1.36):
messages are spelled as there, so ``kubectl`` prints what it prints against a real server.
What is left out is said where it matters (no protobuf or CBOR output, no watch).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

# -- Status errors (apimachinery pkg/api/errors/errors.go) -----------------------------------


class StatusError(Exception):
    """An API error as a ``v1 Status`` (apimachinery ``metav1.Status``, ``errors.StatusError``):
    ``code`` the HTTP status, ``reason`` a ``StatusReason`` (``NotFound``, ``AlreadyExists``,
    ``Invalid``...), ``message`` what kubectl prints after ``Error from server (<reason>):``,
    ``details`` the ``StatusDetails`` (``name``, ``group``, ``kind``, ``causes``)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The ``Status`` object, as the API server writes it."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = {k: v for k, v in self.details.items() if v not in ("", None, [])}
        body["code"] = self.code
        return body


def group_resource(group: str, resource: str) -> str:
    """``schema.GroupResource.String()``: ``resource`` or ``resource.group``."""
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> StatusError:
    """``errors.NewNotFound``: 404, ``configmaps "x" not found``."""
    return StatusError(
        404,
        "NotFound",
        f"{group_resource(group, resource)} {json.dumps(name)} not found",
        {"name": name, "group": group, "kind": resource},
    )


def path_not_found() -> StatusError:
    """A path no handler serves (the API server's not-found handler,
    ``errors.NewGenericServerResponse`` for 404): ``the server could not find the requested
    resource``, empty details."""
    return StatusError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(group: str, resource: str, name: str) -> StatusError:
    """``errors.NewAlreadyExists``: 409, ``configmaps "x" already exists``."""
    return StatusError(
        409,
        "AlreadyExists",
        f"{group_resource(group, resource)} {json.dumps(name)} already exists",
        {"name": name, "group": group, "kind": resource},
    )


def conflict(group: str, resource: str, name: str, why: str) -> StatusError:
    """``errors.NewConflict``: 409 ``Operation cannot be fulfilled on configmaps "x": <why>``."""
    return StatusError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {group_resource(group, resource)} {json.dumps(name)}: {why}",
        {"name": name, "group": group, "kind": resource},
    )


def forbidden(group: str, resource: str, name: str, why: str) -> StatusError:
    """``errors.NewForbidden``: 403, ``configmaps "x" is forbidden: <why>`` (without a name:
    ``configmaps is forbidden: <why>``)."""
    gr = group_resource(group, resource)
    message = f"{gr} {json.dumps(name)} is forbidden: {why}" if name else f"{gr} is forbidden: {why}"
    return StatusError(403, "Forbidden", message, {"name": name, "group": group, "kind": resource})


def method_not_supported(group: str, resource: str, action: str) -> StatusError:
    """``errors.NewMethodNotSupported``: 405, ``watch is not supported on resources of kind
    "configmaps"``."""
    return StatusError(
        405,
        "MethodNotAllowed",
        f"{action} is not supported on resources of kind {json.dumps(group_resource(group, resource))}",
        {"group": group, "kind": resource},
    )


def method_not_allowed() -> StatusError:
    """A method no route takes on a path that exists (``NewGenericServerResponse`` for 405)."""
    return StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def bad_request(message: str) -> StatusError:
    """``errors.NewBadRequest``: 400 with ``message``."""
    return StatusError(400, "BadRequest", message)


def unauthorized() -> StatusError:
    """401 ``Unauthorized`` (``errors.NewUnauthorized``), as for a bad bearer token."""
    return StatusError(401, "Unauthorized", "Unauthorized")


@dataclass
class FieldError:
    """One ``field.Error`` (apimachinery ``pkg/util/validation/field/errors.go``): ``kind`` is
    ``Invalid``, ``Required``, ``Unsupported``...; ``body()`` is ``ErrorBody()``."""

    kind: str
    path: str
    value: Any = None
    detail: str = ""

    TYPES = {
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "Required": ("FieldValueRequired", "Required value"),
        "Unsupported": ("FieldValueNotSupported", "Unsupported value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
    }

    def body(self) -> str:
        _, text = self.TYPES[self.kind]
        if self.kind in ("Invalid", "Unsupported"):
            text = f"{text}: {json.dumps(self.value) if isinstance(self.value, str) else self.value}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> StatusError:
    """``errors.NewInvalid``: 422 ``ConfigMap "x" is invalid: <field>: <body>`` (several
    errors: ``[a, b]``), one ``cause`` per error."""
    gk = f"{kind}.{group}" if group else kind
    agg = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": FieldError.TYPES[e.kind][0], "message": e.body(), "field": e.path} for e in errors]
    return StatusError(
        422,
        "Invalid",
        f"{gk} {json.dumps(name)} is invalid: {agg}",
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )


def not_acceptable(accepted: list[str]) -> StatusError:
    """``negotiation.NewNotAcceptableError``: 406."""
    return StatusError(406, "NotAcceptable", "only the following media types are accepted: " + ", ".join(accepted))


def unsupported_media_type(accepted: list[str]) -> StatusError:
    """``negotiation.NewUnsupportedMediaTypeError``: 415 for a request body in an unknown format."""
    return StatusError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted),
    )


# -- content negotiation (apiserver pkg/endpoints/handlers/negotiation/negotiate.go) ----------
JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
OUTPUT_TYPES = (JSON, YAML)  # what this server writes (the real one writes protobuf too)


@dataclass(frozen=True)
class MediaType:
    """A negotiated response type: ``mime`` (``application/json`` or ``application/yaml``) and
    the conversion asked for with the ``as``/``g``/``v`` parameters (``convert`` is
    ``(group, version, kind)`` or None), and the discovery ``profile``."""

    mime: str
    convert: tuple[str, str, str] | None = None
    profile: str = ""

    def content_type(self) -> str:
        """The response's Content-Type: the mime type with the conversion's parameters, as the
        API server labels a Table or an aggregated discovery document."""
        if self.convert is None:
            return self.mime
        g, v, kind = self.convert
        return f"{self.mime};g={g};v={v};as={kind}"


def parse_accept(header: str) -> list[tuple[str, dict[str, str]]]:
    """The clauses of an Accept header as ``(type/subtype, params)``, highest ``q`` first,
    then the more specific (goautoneg ``ParseAccept``, which the API server uses); clauses
    with ``q=0`` are dropped."""
    clauses = []
    for i, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for p in pieces[1:]:
            k, _, v = p.partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
            elif k.strip():
                params[k.strip()] = v.strip()
        if q > 0:
            mime = pieces[0].lower()
            wild = mime.count("*")
            clauses.append((-q, wild, i, mime, params))
    return [(mime, params) for _, _, _, mime, params in sorted(clauses)]


def negotiate(header: str, allows: set[tuple[str, str, str]]) -> MediaType:
    """The response type for ``header`` (``NegotiateMediaTypeOptions``): the first clause
    whose type this server writes (``*/*`` and ``application/*`` take JSON) and whose
    conversion, if any, the endpoint allows (``allows``: ``(group, version, kind)``; a plain
    object is always allowed). An empty header takes JSON. Raises :class:`StatusError` 406
    when no clause fits. Protobuf and CBOR clauses never fit: this server writes JSON and YAML
    only, and real clients list JSON after them."""
    if not header.strip():
        return MediaType(JSON)
    for mime, params in parse_accept(header):
        if mime in ("*/*", "application/*"):
            mime = JSON
        if mime not in OUTPUT_TYPES:
            continue
        if params.get("stream"):  # watch streams are not served
            continue
        convert = None
        if any(k in params for k in ("as", "g", "v")):
            convert = (params.get("g", ""), params.get("v", ""), params.get("as", ""))
            if convert not in allows:
                continue
        return MediaType(mime, convert, params.get("profile", ""))
    raise not_acceptable(list(OUTPUT_TYPES))


# -- selectors (apimachinery pkg/fields/selector.go, pkg/labels/selector.go) -----------------
@dataclass(frozen=True)
class FieldTerm:
    """One field selector term: ``field``, ``op`` (``=`` or ``!=``), ``value``."""

    field: str
    op: str
    value: str


def _split_unescaped(s: str, sep: str) -> list[str]:
    out, cur, esc = [], "", False
    for ch in s:
        if esc:
            cur += "\\" + ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur + ("\\" if esc else ""))
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_field_selector(selector: str) -> list[FieldTerm]:
    """``fields.ParseSelector``: terms joined by ``,``, each ``f=v``, ``f==v`` or ``f!=v``;
    ``\\`` escapes ``,``, ``=`` and itself in values. Raises :class:`StatusError` 400
    (``invalid selector: '<s>'; can't understand '<term>'``)."""
    terms: list[FieldTerm] = []
    if not selector:
        return terms
    for part in _split_unescaped(selector, ","):
        if part == "":
            continue
        for op in ("!=", "==", "="):
            idx = part.find(op)
            if idx > 0:
                f, v = part[:idx], part[idx + len(op) :]
                terms.append(FieldTerm(f.strip(), "!=" if op == "!=" else "=", _unescape(v)))
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
    return terms


def check_field_labels(terms: list[FieldTerm], supported: tuple[str, ...] | None) -> None:
    """The field label conversion of the kind: ``supported`` lists its selectable fields
    (core/v1 ``AddFieldLabelConversionsFor<Kind>``: ``field label not supported: <f>``), or
    None for a kind with the default conversion (only ``metadata.name`` and
    ``metadata.namespace``: ``"<f>" is not a known field selector: only "metadata.name",
    "metadata.namespace"``). Raises :class:`StatusError` 400."""
    for t in terms:
        if supported is None:
            if t.field not in ("metadata.name", "metadata.namespace"):
                raise bad_request(
                    f'{json.dumps(t.field)} is not a known field selector: only "metadata.name", "metadata.namespace"'
                )
        elif t.field not in supported:
            raise bad_request(f"field label not supported: {t.field}")


BOOLEAN_FIELDS = ("spec.unschedulable", "spec.hostNetwork")


def field_value(obj: dict[str, Any], path: str) -> str:
    """The value a field selector compares for ``path`` (dotted), as the registries'
    ``GetAttrs`` give it: strings as they are, booleans as ``true``/``false`` (a missing
    ``spec.unschedulable`` or ``spec.hostNetwork`` is ``false``, Go's zero value), anything
    else missing as ``""``; Events' ``source`` is ``source.component``, ``reportingComponent``
    is ``reportingController`` (``pkg/registry/core/event/strategy.go``)."""
    if path == "source":
        path = "source.component"
    elif path == "reportingComponent":
        path = "reportingController"
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return "false" if path in BOOLEAN_FIELDS else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(obj: dict[str, Any], terms: list[FieldTerm]) -> bool:
    """Whether ``obj`` satisfies every term."""
    for t in terms:
        equal = field_value(obj, t.field) == t.value
        if equal != (t.op == "="):
            return False
    return True


@dataclass(frozen=True)
class LabelRequirement:
    """One label selector requirement: ``key``, ``op`` (``=``, ``!=``, ``in``, ``notin``,
    ``exists``, ``!``, ``gt``, ``lt``) and ``values``."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and v in self.values
        if self.op in ("!=", "notin"):
            return not has or v not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        try:
            num, bound = int(v or ""), int(self.values[0])
        except ValueError:
            return False
        return num > bound if self.op == "gt" else num < bound


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def parse_label_selector(selector: str) -> list[LabelRequirement]:
    """``labels.Parse``: requirements joined by ``,``: ``k``, ``!k``, ``k=v``, ``k==v``,
    ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k>n``, ``k<n``. Raises
    :class:`StatusError` 400 naming the part it cannot read."""
    reqs: list[LabelRequirement] = []
    s = selector.strip()
    i = 0
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(s):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    if s:
        parts.append(s[start:])
    for raw in parts:
        part = raw.strip()
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^)]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            req = LabelRequirement(m.group(1), m.group(2), values)
        elif part.startswith("!"):
            req = LabelRequirement(part[1:].strip(), "!")
        else:
            m = re.fullmatch(r"([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(\S*)", part)
            if m:
                op = {"==": "=", ">": "gt", "<": "lt"}.get(m.group(2), m.group(2))
                req = LabelRequirement(m.group(1), op, (m.group(3),))
            else:
                req = LabelRequirement(part, "exists")
        if not _LABEL_KEY.match(req.key):
            raise bad_request(
                f"unable to parse requirement: invalid label key {json.dumps(req.key)} in {json.dumps(selector)}"
            )
        reqs.append(req)
    return reqs


def labels_match(obj: dict[str, Any], reqs: list[LabelRequirement]) -> bool:
    """Whether ``obj``'s ``metadata.labels`` satisfy every requirement."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# -- list paging (apiserver pkg/storage/etcd3 continue token) --------------------------------
def encode_continue(revision: int, start_key: str) -> str:
    """A continue token as the etcd3 storage writes it: base64url (no padding) of
    ``{"v": "meta.k8s.io/v1", "rv": <revision>, "start": "<key relative to the prefix>"}``;
    ``start`` is the last returned key with ``\\x00`` appended (the next key after it)."""
    doc = {"v": "meta.k8s.io/v1", "rv": revision, "start": start_key + "\x00"}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).rstrip(b"=").decode()


def decode_continue(token: str) -> str:
    """The start key (relative to the prefix) in a token of :func:`encode_continue`. Raises
    :class:`StatusError` 400 (``continue key is not valid: ...``) for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        if doc.get("v") != "meta.k8s.io/v1" or not isinstance(doc.get("start"), str):
            raise ValueError("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        start = str(doc["start"])
        if start.startswith("/") or ".." in start.split("/"):
            raise ValueError("continue key may not contain a relative path")
        return start
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise bad_request(f"continue key is not valid: {err}") from None


# -- validation (apimachinery pkg/util/validation/validation.go, api/validation) ---------------
DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + "(\\." + DNS1123_LABEL + ")*"
CONFIG_KEY = "[-._a-zA-Z0-9]+"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    ex = " or ".join(f"'{e}'" for e in examples)
    return f"{msg} (e.g. {ex}, regex used for validation is '{fmt}')"


def dns1123_subdomain_errors(value: str) -> list[str]:
    """``IsDNS1123Subdomain``: the messages for ``value`` (empty when valid)."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(DNS1123_SUBDOMAIN, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character",
                DNS1123_SUBDOMAIN,
                "example.com",
            )
        )
    return errs


def dns1123_label_errors(value: str) -> list[str]:
    """``IsDNS1123Label``: the messages for ``value`` (empty when valid)."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(DNS1123_LABEL, value):
        if re.fullmatch(DNS1123_SUBDOMAIN, value):
            errs.append("must not contain dots")
        else:
            errs.append(
                _regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                    "and must start and end with an alphanumeric character",
                    DNS1123_LABEL,
                    "my-name",
                    "123-abc",
                )
            )
    return errs


def config_key_errors(value: str) -> list[str]:
    """``IsConfigMapKey`` (ConfigMap and Secret data keys): the messages for ``value``."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(CONFIG_KEY, value):
        errs.append(
            _regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                CONFIG_KEY,
                "key.name",
                "KEY_NAME",
                "key-name",
            )
        )
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def name_errors(meta: dict[str, Any], label: bool) -> list[FieldError]:
    """``ValidateObjectMeta``'s name checks: ``metadata.name`` required (``name or
    generateName is required``), then each DNS-1123 message (``label``: a DNS label, as for
    Namespaces; otherwise a subdomain)."""
    name = meta.get("name") or ""
    if not name:
        return [FieldError("Required", "metadata.name", detail="name or generateName is required")]
    check = dns1123_label_errors if label else dns1123_subdomain_errors
    return [FieldError("Invalid", "metadata.name", name, msg) for msg in check(name)]


# -- time -------------------------------------------------------------------------------------
def parse_time(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (``metav1.Time`` or ``MicroTime``, any fraction,
    ``Z`` or an offset), or None when ``value`` is empty or not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration`` (apimachinery ``pkg/util/duration``): ``45s``, ``3m20s``,
    ``12m``, ``5h7m``, ``20h``, ``3d4h``, ``40d``, ``2y30d``..., ``<invalid>`` for more than a
    second in the future."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(timestamp: Any, now: float) -> str:
    """``translateTimestampSince``: the human age of ``timestamp`` at ``now`` (Unix seconds),
    ``<unknown>`` when it is missing."""
    t = parse_time(timestamp)
    return "<unknown>" if t is None else human_duration(now - t)


@dataclass
class ListOptions:
    """The list query parameters this server honours (``metav1.ListOptions``): ``fields`` and
    ``labels`` (parsed selectors), ``limit`` (0: all), ``continue_from`` (start key), ``watch``."""

    fields: list[FieldTerm] = field(default_factory=list)
    labels: list[LabelRequirement] = field(default_factory=list)
    limit: int = 0
    continue_from: str = ""
    watch: bool = False


def list_options(query: dict[str, str]) -> ListOptions:
    """Parse ``fieldSelector``, ``labelSelector``, ``limit``, ``continue`` and ``watch``
    from a request's query. Raises :class:`StatusError` 400 on a bad value (a non-numeric
    ``limit``: as ``DecodeParameters`` refuses it)."""
    opts = ListOptions()
    opts.fields = parse_field_selector(query.get("fieldSelector", ""))
    opts.labels = parse_label_selector(query.get("labelSelector", ""))
    raw_limit = query.get("limit", "")
    if raw_limit:
        try:
            opts.limit = max(0, int(raw_limit))
        except ValueError:
            raise bad_request(f"strconv.ParseInt: parsing {json.dumps(raw_limit)}: invalid syntax") from None
    if query.get("continue"):
        opts.continue_from = decode_continue(query["continue"])
    opts.watch = query.get("watch", "").lower() in ("1", "true")
    return opts
