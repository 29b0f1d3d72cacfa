"""What the emulated API server answers the real kubectl, decided without a server: discovery
documents and their negotiation, server-side tables, selectors, paging tokens, validation
messages, Status errors and the protobuf bodies kubectl sends (lab/api*.py). The expected
values are the upstream ones: apimachinery's own test vectors for HumanDuration, bodies
captured from Debian's kubectl 1.36.4 (``kubectl create ... -v=9``), messages as
apimachinery/apiserver spell them. The same answers through a real etcd and the real kubectl:
tests/integration/test_emulated_apiserver_kubectl.py."""

from __future__ import annotations

import time

import pytest

from lab import apimachinery as am
from lab import apiproto, apiresources, apitables
from lab.apiserver import json_merge_patch, json_patch, minor_of

# What kubectl (client-go discovery) and `kubectl get` send.
DISCOVERY_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
DISCOVERY_ACCEPT_136 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer," + DISCOVERY_ACCEPT
)
TABLE_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
TYPED_ACCEPT = "application/vnd.kubernetes.protobuf,application/json"
TABLES = {("meta.k8s.io", "v1", "Table"), ("meta.k8s.io", "v1beta1", "Table")}

# Request bodies of Debian's kubectl 1.36.4 (1.32.3 sends the same bytes).
CONFIGMAP_PB = (
    "6b3873000a0f0a0276311209436f6e6669674d617012330a170a0770622d312e333612001a0022002a00320038004200120"
    "60a016112016212100a086b65792e6e616d6512045a6d39761a002200"
)  # create configmap pb-1.36 --from-literal=a=b --from-literal=key.name=Zm9v
SECRET_PB = (
    "6b3873000a0c0a0276311206536563726574124a0a180a087062732d312e333612001a0022002a00320038004200120f0a0"
    "5746f6b656e12067333637233741a1d626f6f7473747261702e6b756265726e657465732e696f2f746f6b656e1a002200"
)  # create secret generic pbs-1.36 --from-literal=token=s3cr3t --type=bootstrap.kubernetes.io/token
NAMESPACE_PB = (
    "6b3873000a0f0a02763112094e616d65737061636512200a180a0870626e2d312e333612001a0022002a00320038004200"
    "12001a020a001a002200"
)  # create namespace pbn-1.36


# -- discovery -------------------------------------------------------------------------------
@pytest.mark.parametrize("accept", [DISCOVERY_ACCEPT, DISCOVERY_ACCEPT_136])
def test_kubectl_discovery_gets_aggregated_v2_from_both_server_versions(accept: str) -> None:
    for minor in (32, 36):
        media = am.negotiate(accept, apiresources.discovery_kinds(minor))
        assert media.convert == ("apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")
        assert media.content_type() == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def test_v2beta1_discovery_is_served_only_before_1_33() -> None:
    beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    assert am.negotiate(beta, apiresources.discovery_kinds(32)).convert == (
        "apidiscovery.k8s.io",
        "v2beta1",
        "APIGroupDiscoveryList",
    )
    # 1.33+ (AggregatedDiscoveryRemoveBetaType): the legacy document instead.
    assert am.negotiate(beta, apiresources.discovery_kinds(36)) == am.MediaType("application/json")


def test_aggregated_discovery_lists_what_is_served_with_kubectls_fields() -> None:
    core = apiresources.aggregated("api")
    assert core["kind"] == "APIGroupDiscoveryList" and core["apiVersion"] == "apidiscovery.k8s.io/v2"
    [group] = core["items"]
    assert "name" not in group["metadata"]
    [version] = group["versions"]
    assert version["version"] == "v1" and version["freshness"] == "Current"
    by_name = {r["resource"]: r for r in version["resources"]}
    assert sorted(by_name) == ["configmaps", "events", "namespaces", "nodes", "pods", "secrets"]
    nodes = by_name["nodes"]
    assert nodes["scope"] == "Cluster" and nodes["singularResource"] == "node" and nodes["shortNames"] == ["no"]
    assert nodes["responseKind"] == {"group": "", "version": "v1", "kind": "Node"}
    assert nodes["verbs"] == ["create", "delete", "get", "list", "patch", "update"]
    assert nodes["subresources"] == [
        {"subresource": "status", "responseKind": nodes["responseKind"], "verbs": ["get", "patch", "update"]}
    ]
    assert by_name["configmaps"]["scope"] == "Namespaced" and by_name["pods"]["categories"] == ["all"]
    named = apiresources.aggregated("apis", "v2beta1")
    assert named["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    assert [g["metadata"]["name"] for g in named["items"]] == ["certificates.k8s.io", "coordination.k8s.io"]
    csr = named["items"][0]["versions"][0]["resources"][0]
    assert csr["resource"] == "certificatesigningrequests" and csr["verbs"] == ["create"]


def test_legacy_discovery_documents() -> None:
    assert apiresources.api_versions("10.0.0.21:6443") == {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.21:6443"}],
    }
    groups = apiresources.api_group_list()["groups"]
    assert groups[1] == {
        "name": "coordination.k8s.io",
        "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"},
    }
    core = apiresources.api_resource_list("", "v1")
    assert core["groupVersion"] == "v1" and "apiVersion" not in core
    names = [r["name"] for r in core["resources"]]
    assert names == ["configmaps", "events", "namespaces", "nodes", "nodes/status", "pods", "pods/status", "secrets"]
    leases = apiresources.api_resource_list("coordination.k8s.io", "v1")
    assert leases["apiVersion"] == "v1"
    assert leases["resources"] == [
        {
            "name": "leases",
            "singularName": "lease",
            "namespaced": True,
            "kind": "Lease",
            "verbs": list(apiresources.VERBS),
        }
    ]


def test_discovery_etag_is_the_quoted_upper_hex_sha512_and_changes_with_the_document() -> None:
    tag = apiresources.etag(apiresources.aggregated("api"))
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 130 and tag[1:-1] == tag[1:-1].upper()
    assert tag != apiresources.etag(apiresources.aggregated("apis"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api", ("api", "", "", "", "")),
        ("/apis/coordination.k8s.io", ("group", "", "", "", "")),
        ("/api/v1", ("resources", "", "", "", "")),
        ("/api/v1/nodes", ("", "nodes", "", "", "")),
        ("/api/v1/nodes/control0/status", ("", "nodes", "", "control0", "status")),
        ("/api/v1/namespaces", ("", "namespaces", "", "", "")),
        ("/api/v1/namespaces/default", ("", "namespaces", "", "default", "")),
        ("/api/v1/namespaces/default/configmaps", ("", "configmaps", "default", "", "")),
        ("/api/v1/pods", ("", "pods", "", "", "")),
        (
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n",
            ("", "leases", "kube-node-lease", "n", ""),
        ),
    ],
)
def test_paths_resolve_as_the_request_info_resolver_does(path: str, expected: tuple[str, ...]) -> None:
    t = apiresources.resolve(path)
    got = (t.discovery, t.resource.name if t.resource else "", t.namespace, t.name, t.subresource)
    assert got == expected


@pytest.mark.parametrize(
    "path",
    ["/", "/foo", "/api/v2", "/api/v1/foos", "/apis/apps/v1", "/apis/resource.k8s.io/v1/resourceslices",
     "/api/v1/namespaces/default/nodes", "/api/v1/namespaces/x/status", "/api/v1/nodes/a/proxy", "/openapi/v2"],
)  # fmt: skip
def test_paths_not_served_are_a_404_status(path: str) -> None:
    with pytest.raises(am.StatusError) as err:
        apiresources.resolve(path)
    assert err.value.status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404,
    }


# -- negotiation -----------------------------------------------------------------------------
def test_get_gets_a_table_typed_clients_get_json_and_protobuf_only_is_not_acceptable() -> None:
    assert am.negotiate(TABLE_ACCEPT, TABLES).convert == ("meta.k8s.io", "v1", "Table")
    assert am.negotiate(TABLE_ACCEPT, set()) == am.MediaType("application/json")  # no tables here
    assert am.negotiate(TYPED_ACCEPT, TABLES) == am.MediaType("application/json")
    assert am.negotiate("", TABLES) == am.MediaType("application/json")
    assert am.negotiate("*/*", TABLES) == am.MediaType("application/json")
    assert am.negotiate("application/yaml", TABLES).mime == "application/yaml"
    assert am.negotiate("application/json;q=0.5,application/yaml", TABLES).mime == "application/yaml"
    with pytest.raises(am.StatusError) as err:
        am.negotiate("application/vnd.kubernetes.protobuf", TABLES)
    assert (err.value.code, err.value.reason) == (406, "NotAcceptable")


# -- tables ----------------------------------------------------------------------------------
def node(name: str, ready: str | None, labels: dict[str, str], **kw: object) -> dict[str, object]:
    status: dict[str, object] = {
        "addresses": [{"type": "InternalIP", "address": "10.0.0.21"}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": "v1.32.1-emulated", "osImage": "lab", "kernelVersion": "6.1.0"},
    }
    if ready is not None:
        status["conditions"] = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": name, "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": status,
        **kw,
    }


def test_node_rows_as_print_node_makes_them() -> None:
    now = am.parse_time("2026-01-01T00:03:10Z")
    assert now is not None
    cp = {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "c0"}
    assert apitables.node_row(node("c0", "True", cp), now) == [
        "c0", "Ready", "control-plane", "3m10s", "v1.32.1-emulated",
        "10.0.0.21", "<none>", "lab", "6.1.0", "<unknown>",
    ]  # fmt: skip
    row = apitables.node_row(node("w0", "Unknown", {"kubernetes.io/role": "worker"}, spec={"unschedulable": True}), now)
    assert row[1:3] == ["NotReady,SchedulingDisabled", "worker"]
    assert apitables.node_row(node("w1", None, {}), now)[1:3] == ["Unknown", "<none>"]
    cols = apitables.NODE_COLUMNS
    assert [c["name"] for c in cols if c["priority"] == 0] == ["Name", "Status", "Roles", "Age", "Version"]
    assert [c["name"] for c in cols if c["priority"] == 1] == [
        "Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime",
    ]  # fmt: skip


def test_table_rows_carry_partial_metadata_or_the_object_and_the_list_meta() -> None:
    cm = {
        "metadata": {"name": "x", "namespace": "default", "labels": {"a": "b"}},
        "data": {"k": "v"},
        "binaryData": {"b": "AA=="},
    }
    t = apitables.table("ConfigMap", [cm], {"resourceVersion": "7", "continue": "tok", "other": 1}, time.time())
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "7", "continue": "tok"}
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Data", "Age"]
    [row] = t["rows"]
    assert row["cells"] == ["x", 2, "<unknown>"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": cm["metadata"],
    }
    assert apitables.table("ConfigMap", [cm], {}, 0, "v1beta1", "Object")["rows"][0]["object"] is cm
    assert apitables.table("ConfigMap", [cm], {}, 0, "v1", "None")["rows"][0]["object"] is None
    # Kinds without a printer get the default convertor's columns.
    other = apitables.table("Lease2", [cm], {}, 0)
    assert [c["name"] for c in other["columnDefinitions"]] == ["Name", "Created At"]


def test_pod_event_secret_namespace_lease_rows() -> None:
    now = 1_000_000.0
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "w0"},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.244.0.5"}],
            "containerStatuses": [
                {"ready": True, "restartCount": 2, "state": {"running": {}}},
                {"ready": False, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ],
        },
    }
    assert apitables.pod_row(pod, now) == [
        "p",
        "1/2",
        "CrashLoopBackOff",
        "3",
        "<unknown>",
        "10.244.0.5",
        "w0",
        "<none>",
        "<none>",
    ]
    ev = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Node", "name": "w0"},
        "type": "Normal",
        "reason": "Starting",
        "message": " Starting kubelet. ",
        "source": {"component": "kubelet", "host": "w0"},
    }
    assert apitables.event_row(ev, now) == [
        "<unknown>",
        "Normal",
        "Starting",
        "node/w0",
        "",
        "kubelet, w0",
        "Starting kubelet.",
        "<unknown>",
        1,
        "e1",
    ]
    assert apitables.secret_row({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}}, now)[:3] == [
        "s",
        "Opaque",
        2,
    ]
    assert apitables.namespace_row({"metadata": {"name": "n"}, "status": {"phase": "Active"}}, now)[:2] == [
        "n",
        "Active",
    ]
    assert apitables.lease_row({"metadata": {"name": "l"}, "spec": {"holderIdentity": "w0"}}, now)[:2] == ["l", "w0"]


@pytest.mark.parametrize(
    ("seconds", "want"),
    [  # apimachinery pkg/util/duration/duration_test.go (TestHumanDuration, ...Boundaries)
        (1, "1s"), (70, "70s"), (190, "3m10s"), (70 * 60, "70m"), (47 * 3600, "47h"), (49 * 3600, "2d1h"),
        ((8 * 24 + 2) * 3600, "8d"), (367 * 24 * 3600, "367d"), ((365 * 2 * 24 + 25) * 3600, "2y1d"),
        ((365 * 8 * 24 + 2) * 3600, "8y"), (-2, "<invalid>"), (-1.999, "0s"), (0, "0s"), (119.999, "119s"),
        (120, "2m"), (121, "2m1s"), (599.999, "9m59s"), (600, "10m"), (601, "10m"), (3 * 3600 - 0.001, "179m"),
        (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600 - 0.001, "7h59m"), (8 * 3600, "8h"),
        (2 * 86400 - 0.001, "47h"), (2 * 86400, "2d"), (8 * 86400 - 0.001, "7d23h"), (8 * 86400, "8d"),
        (2 * 365 * 86400 - 0.001, "729d"), (2 * 365 * 86400, "2y"), (2 * 365 * 86400 + 86400, "2y1d"),
    ],
)  # fmt: skip
def test_human_duration_matches_apimachinerys_vectors(seconds: float, want: str) -> None:
    assert am.human_duration(seconds) == want


# -- selectors and paging --------------------------------------------------------------------
def test_field_selectors_parse_escape_and_match_as_kubectl_describe_sends_them() -> None:
    terms = am.parse_field_selector("spec.nodeName=control0,status.phase!=Succeeded,status.phase!=Failed")
    assert terms == [
        am.FieldTerm("spec.nodeName", "=", "control0"),
        am.FieldTerm("status.phase", "!=", "Succeeded"),
        am.FieldTerm("status.phase", "!=", "Failed"),
    ]
    pod = {"spec": {"nodeName": "control0"}, "status": {"phase": "Running"}}
    assert am.fields_match(pod, terms) and not am.fields_match({**pod, "status": {"phase": "Failed"}}, terms)
    assert am.parse_field_selector(r"metadata.name==a\,b") == [am.FieldTerm("metadata.name", "=", "a,b")]
    ev = am.parse_field_selector("involvedObject.kind=Node,involvedObject.namespace=,source=kubelet")
    assert am.fields_match({"involvedObject": {"kind": "Node"}, "source": {"component": "kubelet"}}, ev)
    # Go's zero value: a node never cordoned is spec.unschedulable=false.
    assert am.fields_match({"spec": {}}, am.parse_field_selector("spec.unschedulable=false"))
    with pytest.raises(am.StatusError, match="invalid selector: 'nope'; can't understand 'nope'"):
        am.parse_field_selector("nope")


def test_field_labels_are_checked_per_kind_with_the_real_messages() -> None:
    pods = apiresources.resource("", "pods")
    am.check_field_labels(am.parse_field_selector("spec.nodeName=x"), pods.field_labels)
    with pytest.raises(am.StatusError, match=r"^field label not supported: spec\.foo$"):
        am.check_field_labels(am.parse_field_selector("spec.foo=x"), pods.field_labels)
    cms = apiresources.resource("", "configmaps")
    am.check_field_labels(am.parse_field_selector("metadata.namespace=x"), cms.field_labels)
    with pytest.raises(am.StatusError) as err:
        am.check_field_labels(am.parse_field_selector("data.a=b"), cms.field_labels)
    assert err.value.code == 400
    assert err.value.message == '"data.a" is not a known field selector: only "metadata.name", "metadata.namespace"'


def test_label_selectors() -> None:
    obj = {"metadata": {"labels": {"tier": "control-plane", "n": "5"}}}

    def sel(s: str) -> bool:
        return am.labels_match(obj, am.parse_label_selector(s))

    assert sel("tier=control-plane") and sel("tier==control-plane") and not sel("tier!=control-plane")
    assert sel("tier in (a, control-plane),n") and sel("tier notin (a,b)") and sel("!missing")
    assert sel("n>4") and not sel("n<5") and not sel("missing") and sel("")
    with pytest.raises(am.StatusError) as err:
        am.parse_label_selector("bad key=1")
    assert err.value.code == 400


def test_continue_tokens_round_trip_and_a_bad_one_is_a_400() -> None:
    token = am.encode_continue(42, "default/b")
    assert am.decode_continue(token) == "default/b\x00"
    opts = am.list_options(
        {"limit": "2", "continue": token, "labelSelector": "a=b", "fieldSelector": "metadata.name=x"}
    )
    assert (opts.limit, opts.continue_from, len(opts.labels), len(opts.fields)) == (2, "default/b\x00", 1, 1)
    for bad in ("%%%", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJzdGFydCI6Ii9ldGMifQ"):  # garbage; start "/etc"
        with pytest.raises(am.StatusError, match=r"^continue key is not valid"):
            am.decode_continue(bad)
    with pytest.raises(am.StatusError) as err:
        am.list_options({"limit": "ten"})
    assert err.value.code == 400


# -- validation and Status errors ------------------------------------------------------------
def test_invalid_names_and_keys_read_as_the_real_validation_words_them() -> None:
    err = am.invalid("", "ConfigMap", "Bad_Name", am.name_errors({"name": "Bad_Name"}, label=False))
    assert err.code == 422 and err.reason == "Invalid"
    assert err.message == (
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain '
        "must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
    assert err.status()["details"]["causes"][0]["reason"] == "FieldValueInvalid"
    assert am.name_errors({"name": "a.b"}, label=True)[0].detail == "must not contain dots"
    required = am.invalid("", "Namespace", "", am.name_errors({}, label=True))
    assert (
        required.message == 'Namespace "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert am.config_key_errors("ok-key_1.txt") == []
    assert am.config_key_errors("..x")[-1] == "must not start with '..'"
    two = am.invalid(
        "coordination.k8s.io", "Lease", "x", [am.FieldError("Required", "a"), am.FieldError("Required", "b")]
    )
    assert two.message == 'Lease.coordination.k8s.io "x" is invalid: [a: Required value, b: Required value]'


def test_status_errors_word_and_shape_as_apimachinery() -> None:
    assert am.not_found("coordination.k8s.io", "leases", "n0").status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'leases.coordination.k8s.io "n0" not found',
        "reason": "NotFound",
        "details": {"name": "n0", "group": "coordination.k8s.io", "kind": "leases"},
        "code": 404,
    }
    exists = am.already_exists("", "configmaps", "x")
    assert (exists.code, exists.reason, exists.message) == (409, "AlreadyExists", 'configmaps "x" already exists')
    assert (
        am.method_not_supported("", "nodes", "watch").message == 'watch is not supported on resources of kind "nodes"'
    )
    assert am.unsupported_media_type(["application/json"]).code == 415


# -- protobuf bodies --------------------------------------------------------------------------
def test_kubectls_protobuf_bodies_decode_to_the_objects_it_meant() -> None:
    assert apiproto.decode_object(bytes.fromhex(CONFIGMAP_PB)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pb-1.36"},
        "data": {"a": "b", "key.name": "Zm9v"},
    }
    assert apiproto.decode_object(bytes.fromhex(SECRET_PB)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pbs-1.36"},
        "data": {"token": "czNjcjN0"},  # bytes on the wire, base64 in JSON
        "type": "bootstrap.kubernetes.io/token",
    }
    assert apiproto.decode_object(bytes.fromhex(NAMESPACE_PB)) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "pbn-1.36"},
    }


def test_protobuf_of_other_kinds_or_malformed_is_refused_by_name() -> None:
    pod = bytes.fromhex(CONFIGMAP_PB).replace(b"\x0a\x0f\x0a\x02v1\x12\x09ConfigMap", b"\x0a\x09\x0a\x02v1\x12\x03Pod")
    with pytest.raises(apiproto.ProtoError, match="reads protobuf only for"):
        apiproto.decode_object(pod)
    for bad in (b'{"kind": "ConfigMap"}', bytes.fromhex(CONFIGMAP_PB)[:-30], b"k8s\x00\x0a\xff"):
        with pytest.raises(apiproto.ProtoError):
            apiproto.decode_object(bad)


# -- patches and versions --------------------------------------------------------------------
def test_merge_and_json_patches() -> None:
    node = {"metadata": {"name": "n", "labels": {"a": "1", "b": "2"}}, "spec": {}}
    # kubectl label / cordon send strategic merge patches, applied as merge patches.
    assert json_merge_patch(node, {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"unschedulable": True}}) == {
        "metadata": {"name": "n", "labels": {"b": "2", "c": "3"}},
        "spec": {"unschedulable": True},
    }
    ops = [{"op": "add", "path": "/metadata/labels/d", "value": "4"}, {"op": "remove", "path": "/metadata/labels/a"}]
    assert json_patch(node, ops)["metadata"]["labels"] == {"b": "2", "d": "4"}
    assert node["metadata"]["labels"] == {"a": "1", "b": "2"}  # the stored object is untouched
    with pytest.raises(ValueError, match="testing value"):
        json_patch(node, [{"op": "test", "path": "/metadata/name", "value": "m"}])
    with pytest.raises(ValueError):
        json_patch(node, [{"op": "remove", "path": "/nope/x"}])


def test_minor_of_versions() -> None:
    assert minor_of("v1.32.1") == 32 and minor_of("v1.36.4+k3s1") == 36 and minor_of("garbage") == 32
