// wwtemplate renders a Warewulf overlay template (.ww) with Go's text/template against data
// shaped like Warewulf's own template data, for Warewulf 4.5 or 4.6. It exists to test the
// ek8s overlay without a Warewulf server: a template that uses a field the real data does
// not have, or reads a value the wrong way for a version, fails here as it would in wwctl.
//
// Standard library only. Shapes, from Warewulf's internal/pkg/overlay/datastructure.go and
// its debug overlay (template-variables.md.ww):
//   - 4.5: the rendered node's fields are plain (node.NodeConf, filled by GetFrom); the
//     entries of .AllNodes are node.NodeInfo, whose values are node.Entry, read with .Get.
//   - 4.6+: everything is node.Node with plain values (addresses as net.IP).
//
// Usage: wwtemplate -version 4.5|4.6 -data FIXTURE.json -node NAME TEMPLATE.ww
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"text/template"
)

// ---- the fixture: a Warewulf registry and server, version-neutral ----

type fixtureNetDev struct {
	Device  string `json:"device"`
	Hwaddr  string `json:"hwaddr"`
	Ipaddr  string `json:"ipaddr"`
	Netmask string `json:"netmask"`
}

type fixtureNode struct {
	Id       string                   `json:"id"`
	Image    string                   `json:"image"`
	Profiles []string                 `json:"profiles"`
	Primary  string                   `json:"primary_netdev"`
	NetDevs  map[string]fixtureNetDev `json:"netdevs"`
	Tags     map[string]string        `json:"tags"` // node tags merged over its profiles' tags
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
	Nodes []fixtureNode `json:"nodes"`
}

// ---- Warewulf 4.5 ----

// Entry is 4.5's node.Entry: a value with its origin (node, profile, default), read with Get.
type Entry struct{ value string }

func (e Entry) Get() string   { return e.value }
func (e Entry) Defined() bool { return e.value != "" }
func (e Entry) Print() string { return e.value }
func (e Entry) GetB() bool    { return e.value == "true" }

type NetDevEntry struct {
	Device, Hwaddr, Ipaddr, Netmask, Type, OnBoot, Primary Entry
	Tags                                                   map[string]*Entry
}

type NodeInfo struct {
	Id, Comment, ClusterName, ContainerName, Root, PrimaryNetDev Entry
	NetDevs                                                      map[string]*NetDevEntry
	Tags                                                         map[string]*Entry
}

type NetDevs45 struct {
	Device, Hwaddr, Ipaddr, IpCIDR, Netmask, Type, OnBoot, Primary string
	Tags                                                           map[string]string
}

type NodeConf45 struct {
	Comment, ClusterName, ContainerName, Root, PrimaryNetDev string
	SystemOverlay, RuntimeOverlay, Profiles                  []string
	NetDevs                                                  map[string]*NetDevs45
	Tags                                                     map[string]string
}

type Template45 struct {
	Id, Hostname, BuildHost, BuildTime, BuildTimeUnix, BuildSource string
	Ipaddr, Ipaddr6, Netmask, Network, NetworkCIDR                 string
	Ipv6                                                           bool
	AllNodes                                                       []NodeInfo
	NodeConf45
	Container string
}

func data45(f fixture, n fixtureNode) Template45 {
	t := Template45{Id: n.Id, Hostname: n.Id, BuildHost: f.Server.BuildHost, BuildSource: "ek8s-test",
		Ipaddr: f.Server.Ipaddr, Netmask: f.Server.Netmask, Network: f.Server.Network, Container: n.Image}
	t.NodeConf45 = NodeConf45{ContainerName: n.Image, Root: n.Root, PrimaryNetDev: n.Primary,
		SystemOverlay: n.Overlays, RuntimeOverlay: n.Runtime, Profiles: n.Profiles,
		NetDevs: map[string]*NetDevs45{}, Tags: n.Tags}
	for name, d := range n.NetDevs {
		t.NetDevs[name] = &NetDevs45{Device: d.Device, Hwaddr: d.Hwaddr, Ipaddr: d.Ipaddr, Netmask: d.Netmask,
			Type: "ethernet", OnBoot: "true", Primary: fmt.Sprint(name == n.Primary), Tags: map[string]string{}}
	}
	for _, o := range f.Nodes {
		info := NodeInfo{Id: Entry{o.Id}, ContainerName: Entry{o.Image}, Root: Entry{o.Root},
			PrimaryNetDev: Entry{o.Primary}, NetDevs: map[string]*NetDevEntry{}, Tags: map[string]*Entry{}}
		for k, v := range o.Tags {
			info.Tags[k] = &Entry{v}
		}
		for name, d := range o.NetDevs {
			info.NetDevs[name] = &NetDevEntry{Device: Entry{d.Device}, Hwaddr: Entry{d.Hwaddr},
				Ipaddr: Entry{d.Ipaddr}, Netmask: Entry{d.Netmask}, Type: Entry{"ethernet"},
				Primary: Entry{fmt.Sprint(name == o.Primary)}, Tags: map[string]*Entry{}}
		}
		t.AllNodes = append(t.AllNodes, info)
	}
	return t
}

// ---- Warewulf 4.6+ ----

type NetDev struct {
	Device, Hwaddr, Type string
	Ipaddr, Netmask      net.IP
	OnBoot               bool
	Tags                 map[string]string
}

// Node is 4.6's node.Node; its name is a method there, which templates call like a field.
type Node struct {
	id                                    string
	Comment, ClusterName, ImageName, Root string
	PrimaryNetDev                         string
	SystemOverlay, RuntimeOverlay         []string
	Profiles                              []string
	NetDevs                               map[string]*NetDev
	Tags                                  map[string]string
}

func (n Node) Id() string { return n.id }

type Template46 struct {
	Id, Hostname, BuildHost, BuildTime, BuildTimeUnix, BuildSource, Overlay string
	Ipaddr, Ipaddr6, Netmask, Network, NetworkCIDR                          string
	Ipv6                                                                    bool
	AllNodes                                                                []Node
	Node
	ThisNode *Node
}

func node46(o fixtureNode) Node {
	n := Node{id: o.Id, ImageName: o.Image, Root: o.Root, PrimaryNetDev: o.Primary,
		SystemOverlay: o.Overlays, RuntimeOverlay: o.Runtime, Profiles: o.Profiles,
		NetDevs: map[string]*NetDev{}, Tags: o.Tags}
	for name, d := range o.NetDevs {
		n.NetDevs[name] = &NetDev{Device: d.Device, Hwaddr: d.Hwaddr, Type: "ethernet", OnBoot: true,
			Ipaddr: net.ParseIP(d.Ipaddr).To4(), Netmask: net.ParseIP(d.Netmask).To4(), Tags: map[string]string{}}
	}
	return n
}

func data46(f fixture, n fixtureNode) Template46 {
	this := node46(n)
	t := Template46{Id: n.Id, Hostname: n.Id, BuildHost: f.Server.BuildHost, BuildSource: "ek8s-test",
		Overlay: "ek8s", Ipaddr: f.Server.Ipaddr, Netmask: f.Server.Netmask, Network: f.Server.Network,
		Node: this, ThisNode: &this}
	for _, o := range f.Nodes {
		t.AllNodes = append(t.AllNodes, node46(o))
	}
	return t
}

func main() {
	version := flag.String("version", "4.6", "Warewulf version whose data shape to use: 4.5 or 4.6")
	dataPath := flag.String("data", "", "fixture JSON (server and nodes)")
	nodeName := flag.String("node", "", "the node to render for")
	flag.Parse()
	if flag.NArg() != 1 || *dataPath == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "usage: wwtemplate -version 4.5|4.6 -data FIXTURE.json -node NAME TEMPLATE.ww")
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
	tmpl, err := template.New(flag.Arg(0)).ParseFiles(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	tmpl = tmpl.Lookup(baseName(flag.Arg(0)))
	var data any
	switch *version {
	case "4.5":
		data = data45(f, *this)
	case "4.6":
		data = data46(f, *this)
	default:
		fmt.Fprintf(os.Stderr, "unknown version %q (4.5 or 4.6)\n", *version)
		os.Exit(2)
	}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}
