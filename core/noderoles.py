"""A node's labels, taints and extra roles from the inventory (docs/operations.md, "Roles from
the inventory"): how they are written, who may set which, and how a Node is brought in line.

Formats are Kubernetes' own, as ``kubectl label`` and ``kubectl taint`` write them:

* a label is ``key=value``: the key an optional DNS subdomain prefix and ``/``, then a name of
  at most 63 characters (``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?``); the value empty or of
  the name's form (apimachinery ``validation.IsQualifiedName``, ``IsValidLabelValue``);
* a taint is ``key[=value]:Effect`` with the effect ``NoSchedule``, ``PreferNoSchedule`` or
  ``NoExecute`` (``k8s.io/api/core/v1`` ``Taint.ToString``; kubectl ``taint``);
* a role ``gpu`` is the label ``node-role.kubernetes.io/gpu=""``, the convention ``kubectl
  get nodes`` shows under ROLES.

Warewulf tags carry them as one string each, items separated by spaces
(``ek8s_labels="slurm.partition=gpu vendor=nvidia"``): ``wwctl --tagadd`` splits its value on
commas (pflag's string-to-string flag reads it as CSV), and neither labels nor taints may hold
a space.

Who may set what, and so when each is applied:

* A kubelet registers its Node only with labels the NodeRestriction admission plugin lets a
  node set on itself (``plugin/pkg/admission/noderestriction/admission.go``
  ``getForbiddenLabels``, ``k8s.io/kubelet/pkg/apis/well_known_labels.go`` ``IsKubeletLabel``):
  anything outside the ``kubernetes.io`` and ``k8s.io`` namespaces, the
  ``kubelet.kubernetes.io`` and ``node.kubernetes.io`` namespaces and a few well-known keys
  (:func:`kubelet_may_set`); the kubelet refuses to start with others in ``--node-labels``.
  Those go to the kubelet at join (kubeadm ``nodeRegistration.kubeletExtraArgs``
  ``node-labels``; k3s ``node-label``); the rest, ``node-role.kubernetes.io/<role>`` above all,
  only an administrator sets: Phylactery, with the admin credential, once the Node exists.
* Taints are given at registration (kubeadm ``nodeRegistration.taints``, passed as
  ``--register-with-taints`` for a joining worker, ``cmd/kubeadm/app/cmd/phases/join/kubelet.go``;
  applied by the mark-control-plane phase on control nodes; k3s ``node-taint``). A node may
  never change its own taints afterwards (NodeRestriction: "is not allowed to modify
  taints"), so every later change is Phylactery's too.
* A Node lives as long as its boot: the agent prunes it before every rejoin, and the kubelet
  registers it anew, with node.yaml's labels and taints, so they are kept across reboots by
  construction; Phylactery's roles controller puts back what the kubelet may not set.

:func:`node_patch` computes what brings one Node in line, touching only the keys the
inventory manages: those it sets now and those it set before, remembered in the annotations
:data:`MANAGED_LABELS` and :data:`MANAGED_TAINTS`. A label or taint someone else put on the
Node (the control-plane taint, a cordon's ``node.kubernetes.io/unschedulable``) is never
touched. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLE_PREFIX = "node-role.kubernetes.io/"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# Annotations on a Node naming what the inventory manages there (comma-separated): label keys,
# and taints as ``key:Effect`` (a taint's identity: one per key and effect).
MANAGED_LABELS = "ephemeral-k8s/managed-labels"
MANAGED_TAINTS = "ephemeral-k8s/managed-taints"
# The taint kubeadm puts on control-plane Nodes when nodeRegistration.taints is not given
# (cmd/kubeadm/app/constants ControlPlaneTaint); a list given replaces it, so ek8s repeats it.
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane:NoSchedule"

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Labels a kubelet may set on its own Node (k8s.io/kubelet/pkg/apis/well_known_labels.go).
_KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    }
)
_KUBELET_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def label_key(key: str) -> str:
    """``key`` when it is a qualified name (``[prefix/]name``, as above), else ``ValueError``."""
    prefix, slash, name = key.rpartition("/")
    if not _NAME.match(name or ""):
        raise ValueError(
            f"{key!r}: the name part must be 1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends"
        )
    if slash and not _DNS1123_SUBDOMAIN.match(prefix):
        raise ValueError(f"{key!r}: the prefix must be a lower-case DNS subdomain")
    return key


def label_value(value: str) -> str:
    """``value`` when it is a valid label (or taint) value: empty, or a name as above."""
    if value and not _NAME.match(value):
        raise ValueError(f"{value!r}: a value must be empty or 1-63 letters, digits, '-', '_' or '.'")
    return value


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` (``key=`` for an empty value) -> ``(key, value)``. Raises ``ValueError``."""
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"{text!r}: a label is key=value")
    return label_key(key), label_value(value)


@dataclass(frozen=True, order=True)
class Taint:
    """One taint: ``key``, ``value`` (may be empty) and ``effect`` (one of :data:`EFFECTS`)."""

    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """``key[=value]:Effect`` -> a Taint. Raises ``ValueError`` naming what is wrong."""
        head, colon, effect = text.rpartition(":")
        if not colon or effect not in EFFECTS:
            raise ValueError(f"{text!r}: a taint is key[=value]:Effect, Effect one of {', '.join(EFFECTS)}")
        key, _, value = head.partition("=")
        return cls(label_key(key), label_value(value), effect)

    @property
    def ident(self) -> str:
        """``key:Effect``: a Node holds at most one taint per key and effect."""
        return f"{self.key}:{self.effect}"

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    def to_api(self) -> dict[str, str]:
        """The Taint as the API's JSON (``value`` left out when empty, as the API stores it)."""
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


def role_name(role: str) -> str:
    """``role`` when it can follow ``node-role.kubernetes.io/`` in a label key, else ``ValueError``."""
    if not _NAME.match(role):
        raise ValueError(f"{role!r}: a role is 1-63 letters, digits, '-', '_' or '.' (node-role.kubernetes.io/<role>)")
    return role


def _items(v: object, what: str) -> list[str]:
    """A space-separated string (a Warewulf tag) or a list of strings -> the items."""
    if v is None:
        return []
    if isinstance(v, str):
        return v.split()
    if isinstance(v, list | tuple) and all(isinstance(i, str) for i in v):
        return [i.strip() for i in v if i.strip()]
    raise ValueError(f"{what} must be a list of strings or one string of items separated by spaces")


def parse_labels(v: object) -> dict[str, str]:
    """Labels from a mapping (``{key: value}``), a list of ``key=value`` or a space-separated
    string of them. Raises ``ValueError``; a key given twice with two values is refused."""
    if isinstance(v, Mapping):
        out = {}
        for key, value in v.items():
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool) or value is None:
                raise ValueError(f"labels: {key!r}: a label value must be a string")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            out[label_key(key)] = label_value(text)
        return out
    out = {}
    for item in _items(v, "labels"):
        key, value = parse_label(item)
        if key in out and out[key] != value:
            raise ValueError(f"labels: {key} is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def parse_taints(v: object) -> tuple[Taint, ...]:
    """Taints from a list of ``key[=value]:Effect`` or a space-separated string of them, in
    order, one per key and effect (a second one for the same pair is refused)."""
    out: dict[str, Taint] = {}
    given = list(v) if isinstance(v, list | tuple) and all(isinstance(i, Taint) for i in v) else None
    for item in given if given is not None else _items(v, "taints"):
        t = item if isinstance(item, Taint) else Taint.parse(item)
        if t.ident in out and out[t.ident] != t:
            raise ValueError(f"taints: {t.ident} is given twice")
        out[t.ident] = t
    return tuple(out.values())


def parse_roles(v: object) -> tuple[str, ...]:
    """Roles from a list or a space-separated string, each once, in order."""
    return tuple(dict.fromkeys(role_name(r) for r in _items(v, "roles")))


def kubelet_may_set(key: str) -> bool:
    """Whether a kubelet may register its Node with label ``key`` (NodeRestriction and the
    kubelet's own ``--node-labels`` check): not in the ``kubernetes.io``/``k8s.io``
    namespaces, or in the kubelet's allowed set (see the module docstring)."""
    prefix, slash, _ = key.rpartition("/")
    if not slash:
        return True
    restricted = any(prefix == ns or prefix.endswith("." + ns) for ns in ("kubernetes.io", "k8s.io"))
    if not restricted or key in _KUBELET_LABELS:
        return True
    return any(prefix == ns or prefix.endswith("." + ns) for ns in _KUBELET_NAMESPACES)


@dataclass(frozen=True)
class NodeRoles:
    """What the inventory wants on one Node: ``labels`` (key -> value), ``taints``, extra
    ``roles`` (each the label ``node-role.kubernetes.io/<role>=""``)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    roles: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.labels or self.taints or self.roles)

    def all_labels(self) -> dict[str, str]:
        """Every label the Node must carry: ``labels`` and one per role."""
        return {**dict(self.labels), **{ROLE_PREFIX + r: "" for r in self.roles}}

    def kubelet_labels(self) -> dict[str, str]:
        """The labels the kubelet may register with (:func:`kubelet_may_set`), sorted by key."""
        return {k: v for k, v in sorted(self.all_labels().items()) if kubelet_may_set(k)}

    def tags(self) -> dict[str, str]:
        """The Warewulf node tags that carry these (``ek8s_labels``, ``ek8s_taints``,
        ``ek8s_roles``), space-separated, only the non-empty ones."""
        out = {
            "ek8s_labels": " ".join(f"{k}={v}" for k, v in sorted(self.labels.items())),
            "ek8s_taints": " ".join(str(t) for t in self.taints),
            "ek8s_roles": " ".join(self.roles),
        }
        return {k: v for k, v in out.items() if v}

    def to_json(self) -> dict[str, Any]:
        """``{"labels": {...}, "taints": ["k=v:Effect"...], "roles": [...]}``."""
        return {"labels": dict(self.labels), "taints": [str(t) for t in self.taints], "roles": list(self.roles)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NodeRoles:
        """The inverse of :meth:`to_json`. Raises ``ValueError`` on a bad item."""
        return cls(parse_labels(d.get("labels") or {}), parse_taints(d.get("taints")), parse_roles(d.get("roles")))

    def merged(self, other: NodeRoles) -> NodeRoles:
        """``self`` with ``other`` on top: ``other``'s labels win per key, its taints per key
        and effect, roles are the union (``self``'s first)."""
        taints = {t.ident: t for t in self.taints} | {t.ident: t for t in other.taints}
        return NodeRoles(
            {**dict(self.labels), **dict(other.labels)},
            tuple(taints.values()),
            tuple(dict.fromkeys((*self.roles, *other.roles))),
        )


def _split(annotation: str | None) -> set[str]:
    return {s for s in (annotation or "").split(",") if s}


def _taint_set(taints: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", ""))) for t in taints}


def node_patch(
    labels: Mapping[str, str],
    taints: list[Mapping[str, Any]],
    annotations: Mapping[str, str],
    want: NodeRoles,
) -> dict[str, Any] | None:
    """The JSON merge patch (RFC 7386, ``application/merge-patch+json``) that brings a Node
    whose ``metadata.labels``, ``spec.taints`` (API JSON) and ``metadata.annotations`` are
    given in line with ``want``, or None when it already is.

    Sets every label of ``want`` that differs; removes (``null``) a label only when the
    :data:`MANAGED_LABELS` annotation says the inventory set it before and ``want`` no longer
    has it. Taints: keeps every taint whose ``key:Effect`` is neither wanted nor in
    :data:`MANAGED_TAINTS`, replaces the rest by ``want``'s (a merge patch replaces the whole
    ``spec.taints`` list). The annotations are rewritten to what ``want`` manages now."""
    managed_labels = _split(annotations.get(MANAGED_LABELS))
    wanted_labels = want.all_labels()
    label_changes: dict[str, str | None] = {k: v for k, v in wanted_labels.items() if labels.get(k) != v}
    for key in sorted(managed_labels - set(wanted_labels)):
        if key in labels:
            label_changes[key] = None
    managed_taints = _split(annotations.get(MANAGED_TAINTS))
    wanted_ids = {t.ident for t in want.taints}
    kept = [dict(t) for t in taints if f"{t.get('key')}:{t.get('effect')}" not in managed_taints | wanted_ids]
    new_taints = kept + [t.to_api() for t in want.taints]
    notes = {MANAGED_LABELS: ",".join(sorted(wanted_labels)), MANAGED_TAINTS: ",".join(sorted(wanted_ids))}
    note_changes: dict[str, str | None] = {}
    for key, value in notes.items():
        if value and annotations.get(key) != value:
            note_changes[key] = value
        elif not value and key in annotations:
            note_changes[key] = None
    taints_change = _taint_set(new_taints) != _taint_set(taints)
    if not (label_changes or note_changes or taints_change):
        return None
    meta: dict[str, Any] = {}
    if label_changes:
        meta["labels"] = label_changes
    if note_changes:
        meta["annotations"] = note_changes
    patch: dict[str, Any] = {"metadata": meta} if meta else {}
    if taints_change:
        patch["spec"] = {"taints": new_taints}
    return patch
