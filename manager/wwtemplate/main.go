// wwtemplate renders a Warewulf overlay template (.ww) with Go's text/template against data
// shaped like Warewulf's own template data, for Warewulf 4.5, 4.6 or 4.7. It exists to test the
// ek8s overlay without a Warewulf server: a template that uses a field the real data does
// not have, reads a value the wrong way for a version, or calls a method the real receiver
// does not allow, fails here as it would in wwctl.
//
// Standard library only. What it reproduces, from the v4.5.8, v4.6.5 and v4.7.0 tags (v4.7.0 is
// the newest 4.7 tag; its template data, internal/pkg/overlay/datastructure.go and
// internal/pkg/node/datastructure.go, is 4.6.5's field for field, so 4.7 shares 4.6's shape):
//   - The data. 4.5 (internal/pkg/overlay/datastructure.go): the rendered node's fields are
//     plain strings (node.NodeConf filled by GetFrom, node/transformers.go:26), the entries
//     of .AllNodes are node.NodeInfo whose values are node.Entry with pointer-receiver
//     methods (Get, Defined, node/methods.go:215, :429). 4.6 (same file): node.Node with
//     plain values, addresses as net.IP (an empty one prints "<nil>"), Id() a method with a
//     pointer receiver (node/methods.go:330), OnBoot a wwtype.WWbool, i.e. a string
//     (wwtype/wwbool.go:13), so "false" is true inside {{if}}; the top-level node fields
//     are a gob copy (datastructure.go:101-109), which drops the unexported id and primary.
//   - Primary devices. 4.5 sets Primary to "true" on the primary device only and leaves it
//     empty elsewhere (node/constructors.go:204-217); 4.6 marks it in an unexported field
//     read with Primary() (node/methods.go:358-380). Both take the first device by name
//     when none is named primary.
//   - Profiles. A node's fields are merged from its profiles, in the order listed, under its
//     own: a scalar (image, root, a network device's device, netmask, gateway) from the node
//     if set, else from the right-most profile that sets it; tags and network devices per
//     key, the same way; overlay lists appended, profiles' first, then negated entries
//     ("~name") dropped (4.5 node/constructors.go:195-203 SetAltFrom with Entry.Get and
//     GetSlice, methods.go:215-288; 4.6/4.7 node/mergo.go MergeNode, mergo WithOverride and
//     WithAppendSlice, then cleanLists). 4.6 and 4.7 expand nested profiles first, a
//     profile's own profiles before it (mergo.go getProfilesProfiles); 4.5 has none. A
//     profile that does not exist is skipped with a warning only (4.5
//     node/constructors.go:195-199, 4.6 node/mergo.go:147-150), so its facts are silently
//     missing, as on a real server.
//   - Rendering. The data is passed by value (tmpl.Execute(&buffer, data), 4.5
//     overlay/overlay.go:408, 4.6 :1211), option missingkey=default, Warewulf's template
//     functions (4.5 overlay.go:366-403, 4.6 :1156-1183; sprig's, which 4.6 adds, are not
//     modelled: a template using them fails here). With -out the file is written as
//     CarefulWriteBuffer does (4.5 overlay.go:322, 4.6 :1129): an existing file is first
//     copied to FILE.wwbackup unless the template called {{ nobackup }}, and nothing is
//     written when it called {{ abort }}. 4.7's abort returns an error that halts the
//     template where it is called (v4.7.0 overlay.go:1112-1115, 1196-1199, 1251-1254); 4.5's
//     and 4.6's only clear a flag and the template runs on.
//
// Usage: wwtemplate -version 4.5|4.6|4.7 -data FIXTURE.json -node NAME [-out FILE] TEMPLATE.ww
package main

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path"
	"sort"
	"strings"
	"text/template"
)

// ---- the fixture: a Warewulf registry and server, version-neutral ----

type fixtureNetDev struct {
	Device  string            `json:"device"`
	Hwaddr  string            `json:"hwaddr"`
	Ipaddr  string            `json:"ipaddr"`
	Netmask string            `json:"netmask"`
	Gateway string            `json:"gateway"`
	OnBoot  string            `json:"onboot"` // as stored in nodes.conf: "", "true", "false"...
	Tags    map[string]string `json:"tags"`
}

// fixtureProfile is what a profile may set (node.Profile in 4.6+, node.NodeConf in 4.5).
type fixtureProfile struct {
	Profiles []string                 `json:"profiles"` // nested profiles (4.6+)
	Image    string                   `json:"image"`
	Root     string                   `json:"root"`
	NetDevs  map[string]fixtureNetDev `json:"netdevs"`
	Tags     map[string]string        `json:"tags"`
	Overlays []string                 `json:"system_overlays"`
	Runtime  []string                 `json:"runtime_overlays"`
}

type fixtureNode struct {
	Id       string                   `json:"id"`
	Image    string                   `json:"image"`
	Profiles []string                 `json:"profiles"`
	Primary  string                   `json:"primary_netdev"`
	NetDevs  map[string]fixtureNetDev `json:"netdevs"`
	Tags     map[string]string        `json:"tags"` // the node's own tags
	Root     string                   `json:"root"`
	Overlays []string                 `json:"system_overlays"`
	Runtime  []string                 `json:"runtime_overlays"`
}

type fixture struct {
	Server struct {
		Ipaddr    string `json:"ipaddr"`
		Netmask   string `json:"netmask"`
		Network   string `json:"network"`
		BuildHost string `json:"buildhost"`
	} `json:"server"`
	Profiles map[string]fixtureProfile `json:"profiles"`
	Nodes    []fixtureNode             `json:"nodes"`
}

// profileChain is the list of profiles Warewulf merges into a node, in order: 4.6 and 4.7
// put each profile's own profiles before it, once each (mergo.go getProfilesProfiles), and
// drop negated ones (cleanList); 4.5 takes the node's list as it is.
func profileChain(f fixture, n fixtureNode, version string) []string {
	if version == "4.5" {
		return n.Profiles
	}
	visited := map[string]bool{}
	var expand func([]string) []string
	expand = func(ids []string) (out []string) {
		for _, id := range ids {
			if strings.HasPrefix(id, "~") {
				out = append(out, id)
				continue
			}
			if visited[id] {
				continue
			}
			visited[id] = true
			if p, ok := f.Profiles[id]; ok {
				out = append(out, expand(p.Profiles)...)
			}
			out = append(out, id)
		}
		return out
	}
	return cleanList(expand(n.Profiles))
}

// cleanList drops every "~name" and every "name" it negates (4.5 and 4.6+ node/methods.go
// cleanList).
func cleanList(list []string) (out []string) {
	neg := map[string]bool{}
	for _, tok := range list {
		if strings.HasPrefix(tok, "~") {
			neg[strings.TrimPrefix(tok, "~")] = true
		}
	}
	for _, tok := range list {
		if !strings.HasPrefix(tok, "~") && !neg[tok] {
			out = append(out, tok)
		}
	}
	return out
}

func or(own, inherited string) string {
	if own != "" {
		return own
	}
	return inherited
}

// mergeStrings merges tags per key; an empty value does not replace a set one (mergo
// WithOverride; 4.5 Entry.SetAlt ignores empty values).
func mergeStrings(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	for k, v := range src {
		if _, set := dst[k]; v != "" || !set {
			dst[k] = v
		}
	}
	return dst
}

func mergeNetDev(dst, src fixtureNetDev) fixtureNetDev {
	dst.Device = or(src.Device, dst.Device)
	dst.Hwaddr = or(src.Hwaddr, dst.Hwaddr)
	dst.Ipaddr = or(src.Ipaddr, dst.Ipaddr)
	dst.Netmask = or(src.Netmask, dst.Netmask)
	dst.Gateway = or(src.Gateway, dst.Gateway)
	dst.OnBoot = or(src.OnBoot, dst.OnBoot)
	dst.Tags = mergeStrings(dst.Tags, src.Tags)
	return dst
}

// resolve is the node as Warewulf hands it to a template: its profiles (profileChain) merged
// in order, then its own fields over them. A profile that does not exist is skipped with
// Warewulf's warning.
func resolve(f fixture, n fixtureNode, version string) fixtureNode {
	out := fixtureNode{Id: n.Id, Profiles: n.Profiles, Primary: n.Primary,
		NetDevs: map[string]fixtureNetDev{}, Tags: map[string]string{}}
	layers := []fixtureProfile{}
	for _, p := range profileChain(f, n, version) {
		prof, ok := f.Profiles[p]
		if !ok {
			if version == "4.5" {
				fmt.Fprintf(os.Stderr, "WARN   : Profile not found for node '%s': %s\n", n.Id, p)
			} else {
				fmt.Fprintf(os.Stderr, "WARN   : profile not found: %s\n", p)
			}
			continue
		}
		layers = append(layers, prof)
	}
	layers = append(layers, fixtureProfile{Image: n.Image, Root: n.Root, NetDevs: n.NetDevs, Tags: n.Tags,
		Overlays: n.Overlays, Runtime: n.Runtime})
	for _, l := range layers {
		out.Image = or(l.Image, out.Image)
		out.Root = or(l.Root, out.Root)
		out.Overlays = append(out.Overlays, l.Overlays...)
		out.Runtime = append(out.Runtime, l.Runtime...)
		out.Tags = mergeStrings(out.Tags, l.Tags)
		for name, d := range l.NetDevs {
			out.NetDevs[name] = mergeNetDev(out.NetDevs[name], d)
		}
	}
	out.Overlays, out.Runtime = cleanList(out.Overlays), cleanList(out.Runtime)
	return out
}

// primaryName is the node's primary device: the one named, else the first by name.
func primaryName(n fixtureNode) string {
	if _, ok := n.NetDevs[n.Primary]; ok {
		return n.Primary
	}
	names := make([]string, 0, len(n.NetDevs))
	for name := range n.NetDevs {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) > 0 {
		return names[0]
	}
	return n.Primary
}

// ---- Warewulf 4.5 ----

// Entry is 4.5's node.Entry: a value with its origin (node, profile, default). Its methods
// have pointer receivers, so they work only on addressable values (a slice element, a
// field reached through a pointer), as in Warewulf.
type Entry struct{ value string }

func (e *Entry) Get() string   { return e.value }
func (e *Entry) Defined() bool { return e.value != "" }
func (e *Entry) Print() string {
	if e.value == "" {
		return "--"
	}
	return e.value
}
func (e *Entry) GetB() bool {
	v := strings.ToLower(e.value)
	return e.value != "" && v != "false" && v != "no" && v != "0"
}

type NetDevEntry struct {
	Type, OnBoot, Device, Hwaddr, Ipaddr, Netmask, Gateway, Primary Entry
	Tags                                                            map[string]*Entry
}

type NodeInfo struct {
	Id, Comment, ClusterName, ContainerName, Root, PrimaryNetDev Entry
	Profiles, SystemOverlay, RuntimeOverlay                      Entry
	NetDevs                                                      map[string]*NetDevEntry
	Tags                                                         map[string]*Entry
}

type NetDevs45 struct {
	Type, OnBoot, Device, Hwaddr, Ipaddr, IpCIDR, Netmask, Gateway, Primary string
	Tags                                                                    map[string]string
}

type NodeConf45 struct {
	Comment, ClusterName, ContainerName, Root, PrimaryNetDev string
	SystemOverlay, RuntimeOverlay, Profiles                  []string
	NetDevs                                                  map[string]*NetDevs45
	Tags                                                     map[string]string
}

type Template45 struct {
	Id, Hostname, BuildHost, BuildTime, BuildTimeUnix, BuildSource string
	Ipaddr, Ipaddr6, Netmask, Network, NetworkCIDR, Overlay        string
	Ipv6                                                           bool
	AllNodes                                                       []NodeInfo
	NodeConf45
	Container string
	ThisNode  *NodeInfo
}

// onboot45: 4.5 gives every device the defaults' "onboot: true" unless it sets its own
// (node/constructors.go:23-40, FallBackConf and defaults.conf).
func onboot45(d fixtureNetDev) string {
	if d.OnBoot != "" {
		return d.OnBoot
	}
	return "true"
}

// primary45: "true" on the primary device, empty (not "false") on the others.
func primary45(name, primary string) string {
	if name == primary {
		return "true"
	}
	return ""
}

func entries45(tags map[string]string) map[string]*Entry {
	out := map[string]*Entry{}
	for k, v := range tags {
		out[k] = &Entry{v}
	}
	return out
}

func info45(o fixtureNode) NodeInfo {
	primary := primaryName(o)
	info := NodeInfo{Id: Entry{o.Id}, ContainerName: Entry{o.Image}, Root: Entry{o.Root},
		PrimaryNetDev: Entry{primary}, Profiles: Entry{strings.Join(o.Profiles, ",")},
		NetDevs: map[string]*NetDevEntry{}, Tags: map[string]*Entry{}}
	info.Tags = entries45(o.Tags)
	for name, d := range o.NetDevs {
		info.NetDevs[name] = &NetDevEntry{Type: Entry{"ethernet"}, OnBoot: Entry{onboot45(d)},
			Device: Entry{d.Device}, Hwaddr: Entry{d.Hwaddr}, Ipaddr: Entry{d.Ipaddr},
			Netmask: Entry{d.Netmask}, Gateway: Entry{d.Gateway}, Primary: Entry{primary45(name, primary)},
			Tags: entries45(d.Tags)}
	}
	return info
}

func data45(f fixture, all []fixtureNode, n fixtureNode) Template45 {
	t := Template45{Id: n.Id, Hostname: n.Id, BuildHost: f.Server.BuildHost, BuildSource: "ek8s-test",
		Ipaddr: f.Server.Ipaddr, Netmask: f.Server.Netmask, Network: f.Server.Network, Container: n.Image}
	primary := primaryName(n)
	tags := map[string]string{}
	for k, v := range n.Tags {
		if v != "" { // GetFrom keeps only tags with a value (transformers.go:80-83)
			tags[k] = v
		}
	}
	t.NodeConf45 = NodeConf45{ContainerName: n.Image, Root: n.Root, PrimaryNetDev: primary,
		SystemOverlay: n.Overlays, RuntimeOverlay: n.Runtime, Profiles: n.Profiles,
		NetDevs: map[string]*NetDevs45{}, Tags: tags}
	for name, d := range n.NetDevs {
		cidr := net.IPNet{IP: net.ParseIP(d.Ipaddr), Mask: net.IPMask(net.ParseIP(d.Netmask))}
		t.NetDevs[name] = &NetDevs45{Type: "ethernet", OnBoot: onboot45(d), Device: d.Device, Hwaddr: d.Hwaddr,
			Ipaddr: d.Ipaddr, IpCIDR: cidr.String(), Netmask: d.Netmask, Gateway: d.Gateway,
			Primary: primary45(name, primary), Tags: nonNil(d.Tags)}
	}
	this := info45(n)
	t.ThisNode = &this
	for _, o := range all {
		t.AllNodes = append(t.AllNodes, info45(o))
	}
	return t
}

// ---- Warewulf 4.6+ ----

// WWbool is 4.6's wwtype.WWbool: a string, so any non-empty value, "false" included, is
// true inside {{if}}; .Bool reads it as a boolean.
type WWbool string

func (v WWbool) Bool() bool {
	switch strings.ToLower(string(v)) {
	case "yes", "true", "1", "t":
		return true
	}
	return false
}

func (v WWbool) BoolDefaultTrue() bool {
	switch strings.ToLower(string(v)) {
	case "no", "false", "0", "f":
		return false
	}
	return true
}

type NetDev struct {
	Type    string
	OnBoot  WWbool
	Device  string
	Hwaddr  string
	Ipaddr  net.IP
	Netmask net.IP
	Gateway net.IP
	Tags    map[string]string
	primary bool
}

func (dev *NetDev) Primary() bool { return dev.primary }

// Profile holds what a profile and a node may set (node.Profile).
type Profile struct {
	id                                    string
	Profiles                              []string
	Comment, ClusterName, ImageName, Root string
	RuntimeOverlay, SystemOverlay         []string
	NetDevs                               map[string]*NetDev
	Tags                                  map[string]string
	PrimaryNetDev                         string
}

// Node is 4.6's node.Node; its name is a method with a pointer receiver.
type Node struct {
	id           string
	Discoverable WWbool
	AssetKey     string
	Profile
}

func (n *Node) Id() string { return n.id }

type Template46 struct {
	Id, Hostname, BuildHost, BuildTime, BuildTimeUnix, BuildSource string
	Ipaddr, IpCIDR, Netmask, Network, NetworkCIDR, Overlay         string
	Ipaddr6                                                        string
	Ipv6                                                           bool
	AllNodes                                                       []Node
	Node
	Container     string
	ContainerName string
	ThisNode      *Node
}

func node46(o fixtureNode) Node {
	primary := primaryName(o)
	n := Node{id: o.Id, Profile: Profile{ImageName: o.Image, Root: o.Root, PrimaryNetDev: primary,
		SystemOverlay: o.Overlays, RuntimeOverlay: o.Runtime, Profiles: o.Profiles,
		NetDevs: map[string]*NetDev{}, Tags: o.Tags}}
	for name, d := range o.NetDevs {
		n.NetDevs[name] = &NetDev{Type: "ethernet", OnBoot: WWbool(d.OnBoot), Device: d.Device, Hwaddr: d.Hwaddr,
			Ipaddr: net.ParseIP(d.Ipaddr), Netmask: net.ParseIP(d.Netmask), Gateway: net.ParseIP(d.Gateway),
			Tags: nonNil(d.Tags), primary: name == primary}
	}
	return n
}

func data46(f fixture, all []fixtureNode, n fixtureNode) (Template46, error) {
	this := node46(n)
	t := Template46{Id: n.Id, Hostname: n.Id, BuildHost: f.Server.BuildHost, BuildSource: "ek8s-test",
		Overlay: "ek8s", Ipaddr: f.Server.Ipaddr, Netmask: f.Server.Netmask, Network: f.Server.Network,
		Container: n.Image, ContainerName: n.Image, ThisNode: &this}
	for _, o := range all {
		t.AllNodes = append(t.AllNodes, node46(o))
	}
	// The top-level node fields are a gob copy, as InitStruct makes them.
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(this); err != nil {
		return t, err
	}
	err := gob.NewDecoder(&buf).Decode(&t)
	return t, err
}

// nonNil: Warewulf's Expand() gives every device a tags map (4.6+ node/methods.go:118-139).
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// ---- rendering ----

type outcome struct{ writeFile, backupFile bool }

// errAbort is 4.7's abort: an error that halts the template (v4.7.0 overlay.go:1115).
var errAbort = errors.New("abort")

func funcs(version string, out *outcome) template.FuncMap {
	unsupported := func(name string) func(...any) (string, error) {
		return func(...any) (string, error) { return "", fmt.Errorf("%s is not modelled by wwtemplate", name) }
	}
	m := template.FuncMap{
		"Include":      unsupported("Include"),
		"IncludeFrom":  unsupported("IncludeFrom"),
		"IncludeBlock": unsupported("IncludeBlock"),
		"basename":     path.Base,
		"inc":          func(i int) int { return i + 1 },
		"dec":          func(i int) int { return i - 1 },
		"file":         func(s string) string { return fmt.Sprintf("{{ /* file \"%s\" */ }}", s) },
		"IgnitionJson": unsupported("IgnitionJson"),
		"abort":        func() string { out.writeFile = false; return "" },
		"nobackup":     func() string { out.backupFile = false; return "" },
	}
	if version == "4.7" {
		m["abort"] = func() (string, error) { out.writeFile = false; return "", errAbort }
	}
	if version == "4.5" {
		m["split"] = strings.Split
		m["tr"] = func(s, old, new string) string { return strings.ReplaceAll(s, old, new) }
		m["replace"] = func(s, old, new string) string { return strings.ReplaceAll(s, old, new) }
	} else {
		m["ImportLink"] = unsupported("ImportLink")
		m["softlink"] = func(s string) string { return fmt.Sprintf("{{ /* softlink \"%s\" */ }}", s) }
		m["readlink"] = unsupported("readlink")
		m["UniqueField"] = unsupported("UniqueField")
		m["SystemdEscape"] = unsupported("SystemdEscape")
		m["SystemdEscapePath"] = unsupported("SystemdEscapePath")
	}
	return m
}

// carefulWrite writes like Warewulf's CarefulWriteBuffer: FILE.wwbackup first, from an
// existing FILE, unless the template called nobackup (or a backup exists already).
func carefulWrite(dest string, content []byte, backup bool) error {
	if backup {
		if _, err := os.Stat(dest + ".wwbackup"); os.IsNotExist(err) {
			if old, err := os.ReadFile(dest); err == nil {
				if err := os.WriteFile(dest+".wwbackup", old, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return os.WriteFile(dest, content, 0o644)
}

func main() {
	version := flag.String("version", "4.6", "Warewulf version whose data shape to use: 4.5, 4.6 or 4.7")
	dataPath := flag.String("data", "", "fixture JSON (server, profiles and nodes)")
	nodeName := flag.String("node", "", "the node to render for")
	outPath := flag.String("out", "", "write the result here as Warewulf does (.wwbackup, nobackup, abort)")
	flag.Parse()
	if flag.NArg() != 1 || *dataPath == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "usage: wwtemplate -version 4.5|4.6|4.7 -data FIXTURE.json -node NAME [-out FILE] TEMPLATE.ww")
		os.Exit(2)
	}
	raw, err := os.ReadFile(*dataPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		fmt.Fprintln(os.Stderr, "fixture:", err)
		os.Exit(2)
	}
	sort.SliceStable(f.Nodes, func(i, j int) bool { return f.Nodes[i].Id < f.Nodes[j].Id })
	var this *fixtureNode
	for i := range f.Nodes {
		if f.Nodes[i].Id == *nodeName {
			this = &f.Nodes[i]
		}
	}
	if this == nil {
		fmt.Fprintf(os.Stderr, "node %q is not in the fixture\n", *nodeName)
		os.Exit(2)
	}
	if *version != "4.5" && *version != "4.6" && *version != "4.7" {
		fmt.Fprintf(os.Stderr, "unknown version %q (4.5, 4.6 or 4.7)\n", *version)
		os.Exit(2)
	}
	all := make([]fixtureNode, len(f.Nodes))
	for i, n := range f.Nodes {
		all[i] = resolve(f, n, *version)
	}
	node := resolve(f, *this, *version)
	var data any
	if *version == "4.5" {
		data = data45(f, all, node)
	} else if data, err = data46(f, all, node); err != nil { // 4.7: the same data (see the header)
		fmt.Fprintln(os.Stderr, "gob:", err)
		os.Exit(2)
	}
	out := outcome{writeFile: true, backupFile: true}
	name := path.Base(flag.Arg(0))
	tmpl, err := template.New(name).Option("missingkey=default").Funcs(funcs(*version, &out)).ParseFiles(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil && !errors.Is(err, errAbort) { // by value, as Warewulf passes it
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
	if *outPath == "" {
		os.Stdout.Write(buf.Bytes())
		return
	}
	if !out.writeFile {
		return
	}
	if err := carefulWrite(*outPath, buf.Bytes(), out.backupFile); err != nil {
		fmt.Fprintln(os.Stderr, "write:", err)
		os.Exit(1)
	}
}
