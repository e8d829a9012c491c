// Package kubernetes_test checks deploy/kubernetes/ctdoctor-exporter.yaml
// against the Kubernetes API types (and prometheus-operator's for the
// ServiceMonitor) with strict decoding, then checks on the typed objects
// that the DaemonSet is as locked down as the exporter allows and that the
// DaemonSet, the Service and the ServiceMonitor fit together and fit the
// exporter.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/ctdoctor/ctdoctor/exporter"
	"github.com/ctdoctor/ctdoctor/internal/cli"
)

const manifestFile = "ctdoctor-exporter.yaml"

// imageUser is the user the image runs as when nothing overrides it: the
// Containerfile's USER (deploy/container/build's tests check that the image
// built without a container engine has the same).
func imageUser() string {
	b, err := os.ReadFile("../container/Containerfile")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	user := "root"
	for _, l := range strings.Split(string(b), "\n") {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user = strings.TrimSpace(u)
		}
	}
	return user
}

// manifests are the objects of the file, decoded into their API types.
type manifests struct {
	namespace      *corev1.Namespace
	serviceAccount *corev1.ServiceAccount // optional
	daemonSet      *appsv1.DaemonSet
	service        *corev1.Service
	serviceMonitor *monv1.ServiceMonitor
}

// decodeStrict splits the multi-document YAML and decodes each document
// with apimachinery's strict serializer (the decoding `kubectl apply
// --validate=strict` and the API server use): a field the type does not
// have, a field in the wrong case, a field given twice or a value of the
// wrong type is an error, and so is a kind outside the scheme below.
func decodeStrict(data []byte) (*manifests, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, monv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("scheme: %w", err)
		}
	}
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
	m := &manifests{}
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err == nil && string(j) == "null" {
			continue // only comments
		}
		obj, gvk, err := ser.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		dup := func(have bool) error {
			if have {
				return fmt.Errorf("document %d: a second %s", i, gvk.Kind)
			}
			return nil
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			err, m.namespace = dup(m.namespace != nil), o
		case *corev1.ServiceAccount:
			err, m.serviceAccount = dup(m.serviceAccount != nil), o
		case *appsv1.DaemonSet:
			err, m.daemonSet = dup(m.daemonSet != nil), o
		case *corev1.Service:
			err, m.service = dup(m.service != nil), o
		case *monv1.ServiceMonitor:
			err, m.serviceMonitor = dup(m.serviceMonitor != nil), o
		default:
			err = fmt.Errorf("document %d: unexpected kind %s", i, gvk)
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case m.namespace == nil:
		return nil, errors.New("no Namespace")
	case m.daemonSet == nil:
		return nil, errors.New("no DaemonSet")
	case m.service == nil:
		return nil, errors.New("no Service")
	case m.serviceMonitor == nil:
		return nil, errors.New("no ServiceMonitor")
	}
	return m, nil
}

// neededCapabilities are the capabilities exporter.Privileges names (the
// text of 'ctdoctor exporter --help'), without the CAP_ prefix.
func neededCapabilities() []corev1.Capability {
	var caps []corev1.Capability
	for _, c := range regexp.MustCompile(`\bCAP_[A-Z_]+`).FindAllString(exporter.Privileges, -1) {
		if c := corev1.Capability(strings.TrimPrefix(c, "CAP_")); !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	slices.Sort(caps)
	return caps
}

// check returns every way the manifests fall short. serve answers the
// probes' and the ServiceMonitor's requests as the exporter does.
func check(data []byte, serve http.Handler) []error {
	m, err := decodeStrict(data)
	if err != nil {
		return []error{err}
	}
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	ns := m.namespace.Name
	for _, o := range []metav1.Object{m.daemonSet, m.service, m.serviceMonitor} {
		if o.GetNamespace() != ns {
			fail("%s is in namespace %q, not the file's Namespace %q", o.GetName(), o.GetNamespace(), ns)
		}
	}
	if sa := m.serviceAccount; sa != nil && sa.Namespace != ns {
		fail("ServiceAccount %s is in namespace %q, not %q", sa.Name, sa.Namespace, ns)
	}

	// The DaemonSet: the node's network and PID namespaces, and a pod
	// template its selector selects.
	ds := m.daemonSet
	pod := ds.Spec.Template.Spec
	if ds.Spec.Selector == nil {
		fail("the DaemonSet has no selector")
	} else if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		fail("the DaemonSet's selector %v does not select its pod template's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !pod.HostNetwork {
		fail("hostNetwork is not true: the exporter would watch its pod's table, not the node's")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		fail("automountServiceAccountToken is not false: the exporter does not talk to the API server")
	}
	if len(pod.InitContainers) > 0 || len(pod.EphemeralContainers) > 0 {
		fail("init or ephemeral containers: each one needs the same checks")
	}
	if len(pod.Containers) != 1 {
		fail("%d containers, want 1", len(pod.Containers))
		return errs
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		fail("command %v replaces the image's entrypoint", c.Command)
	}
	// Every flag is one 'ctdoctor exporter' knows ("--help" after them
	// makes the real command parse them and stop).
	var usage bytes.Buffer
	if len(c.Args) == 0 || c.Args[0] != "exporter" {
		fail("args %v do not run 'ctdoctor exporter'", c.Args)
	} else if code := cli.Main(append(slices.Clone(c.Args), "--help"), io.Discard, &usage); code != 0 {
		fail("args %v: 'ctdoctor %s --help' exits %d: %s", c.Args, strings.Join(c.Args, " "), code, strings.TrimSpace(usage.String()))
	}
	if slices.Contains(c.Args, "--all-netns") && !pod.HostPID {
		fail("--all-netns without hostPID: the pods' namespaces are found through the node's /proc")
	}

	// Security: exactly the capabilities the exporter uses, all others
	// dropped, no escalation, a read-only root, the runtime's seccomp
	// profile, and an explicit user.
	sc := c.SecurityContext
	if sc == nil {
		fail("the container has no securityContext")
		return errs
	}
	if sc.Privileged == nil || *sc.Privileged {
		fail("privileged is not false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("readOnlyRootFilesystem is not true")
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		fail("procMount %s: want the default (masked) /proc", *sc.ProcMount)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod.SecurityContext != nil {
		seccomp = pod.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("seccompProfile %v: want RuntimeDefault", seccomp)
	}
	if caps := sc.Capabilities; caps == nil {
		fail("no capabilities: want ALL dropped and %v added", neededCapabilities())
	} else {
		if !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) {
			fail("capabilities drop %v, want [ALL]", caps.Drop)
		}
		add := slices.Clone(caps.Add)
		slices.Sort(add)
		if want := neededCapabilities(); !slices.Equal(add, want) {
			fail("capabilities add %v, want exactly %v (the ones 'ctdoctor exporter --help' names)", caps.Add, want)
		}
	}
	// Kubernetes gives added capabilities to a non-root user in the
	// bounding set only (no ambient capabilities), and no_new_privs rules
	// out file capabilities: the exporter must run as uid 0 to use them.
	// The image's own user is not root, so uid 0 must be set here, and
	// runAsNonRoot cannot be true. With no capability added, it must be.
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
			fail("runAsUser %v: the capabilities work only for uid 0 (the image's user is %s)", ptrString(sc.RunAsUser), imageUser())
		}
	} else if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		fail("no capability added, yet runAsNonRoot is not true")
	}

	// Resources: requests for scheduling, a memory limit (the background
	// listing's child process is in the same cgroup), requests within the limits.
	res := c.Resources
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := res.Requests[r]; !ok || q.Sign() <= 0 {
			fail("no %s request", r)
		}
	}
	if q, ok := res.Limits[corev1.ResourceMemory]; !ok || q.Sign() <= 0 {
		fail("no memory limit")
	}
	for r, lim := range res.Limits {
		if req, ok := res.Requests[r]; ok && req.Cmp(lim) > 0 {
			fail("%s request %s above its limit %s", r, req.String(), lim.String())
		}
	}

	// Ports: one named port on the exporter's default port, which the
	// listen address in the args uses.
	var metricsPort *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.ContainerPort == exporter.DefaultPort {
			metricsPort = &c.Ports[i]
		}
	}
	if metricsPort == nil || metricsPort.Name == "" || (metricsPort.Protocol != "" && metricsPort.Protocol != corev1.ProtocolTCP) {
		fail("container ports %v: want a named TCP port %d (the exporter's default)", c.Ports, exporter.DefaultPort)
		return errs
	}
	if metricsPort.HostPort != 0 && metricsPort.HostPort != metricsPort.ContainerPort {
		fail("hostPort %d: with hostNetwork it must equal containerPort %d", metricsPort.HostPort, metricsPort.ContainerPort)
	}
	listen := ""
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--web.listen-address="); ok {
			listen = v
		} else if a == "--web.listen-address" && i+1 < len(c.Args) {
			listen = c.Args[i+1]
		}
	}
	if listen != "" && !strings.HasSuffix(listen, ":"+strconv.Itoa(int(metricsPort.ContainerPort))) {
		fail("--web.listen-address=%s is not port %d", listen, metricsPort.ContainerPort)
	}
	resolvesToMetrics := func(p intstr.IntOrString) bool {
		if p.Type == intstr.String {
			return p.StrVal == metricsPort.Name
		}
		return p.IntVal == metricsPort.ContainerPort
	}

	// Probes: an HTTP GET on the exporter's port, on a path the exporter
	// answers 200.
	get := func(path string) int {
		rec := httptest.NewRecorder()
		serve.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	for name, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		switch {
		case pr == nil || pr.HTTPGet == nil:
			fail("no HTTP %s probe", name)
		case !resolvesToMetrics(pr.HTTPGet.Port):
			fail("%s probe port %s is not the exporter's port %s/%d", name, pr.HTTPGet.Port.String(), metricsPort.Name, metricsPort.ContainerPort)
		case pr.HTTPGet.Scheme != "" && pr.HTTPGet.Scheme != corev1.URISchemeHTTP:
			fail("%s probe scheme %s", name, pr.HTTPGet.Scheme)
		default:
			if code := get(pr.HTTPGet.Path); code != http.StatusOK {
				fail("%s probe path %q: the exporter answers %d", name, pr.HTTPGet.Path, code)
			}
		}
	}

	// Volumes: every mount has its volume, and what comes from the node is
	// mounted read-only.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		switch {
		case !ok:
			fail("volume mount %s: no such volume", vm.Name)
		case v.HostPath != nil && !vm.ReadOnly:
			fail("volume mount %s: the node's %s is not mounted read-only", vm.Name, v.HostPath.Path)
		}
	}

	// The Service selects the DaemonSet's pods and names the port.
	svc := m.service
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		fail("the Service's selector %v does not select the DaemonSet's pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	var svcPort *corev1.ServicePort
	for i, p := range svc.Spec.Ports {
		if resolvesToMetrics(p.TargetPort) {
			svcPort = &svc.Spec.Ports[i]
		}
	}
	if svcPort == nil || svcPort.Name == "" {
		fail("Service ports %v: none is a named port targeting the container's %s", svc.Spec.Ports, metricsPort.Name)
		return errs
	}

	// The ServiceMonitor selects the Service, in its namespace, and
	// scrapes a port the Service has, on a path that serves metrics.
	sm := m.serviceMonitor
	if sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		fail("the ServiceMonitor's selector %v does not select the Service's labels %v (%v)", sm.Spec.Selector, svc.Labels, err)
	}
	if nsSel := sm.Spec.NamespaceSelector; !nsSel.Any && len(nsSel.MatchNames) > 0 && !slices.Contains(nsSel.MatchNames, svc.Namespace) {
		fail("the ServiceMonitor's namespaceSelector %v leaves out the Service's namespace %s", nsSel.MatchNames, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) == 0 {
		fail("the ServiceMonitor has no endpoints")
	}
	for _, ep := range sm.Spec.Endpoints {
		if ep.Port != svcPort.Name {
			fail("ServiceMonitor endpoint port %q is not the Service's port name %q", ep.Port, svcPort.Name)
		}
		path := "/metrics" // prometheus-operator's default
		if ep.Path != "" {
			path = ep.Path
		}
		rec := httptest.NewRecorder()
		serve.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "ctdoctor_exporter_up") {
			fail("ServiceMonitor path %q: the exporter answers %d without its metrics", path, rec.Code)
		}
	}
	return errs
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// exporterHandler is the real exporter's HTTP handler (its own namespace,
// no background work: only the paths and status codes matter here).
func exporterHandler(t *testing.T) http.Handler {
	t.Helper()
	exp, err := exporter.New(exporter.Options{BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := exp.Handler(exporter.HandlerOptions{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The shipped manifests decode strictly into the API types and pass every check.
func TestManifests(t *testing.T) {
	data, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range check(data, exporterHandler(t)) {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// The checks did look at something: the objects decoded whole.
	m, _ := decodeStrict(data)
	if got := m.daemonSet.Spec.Template.Spec.Containers[0].Image; !strings.Contains(got, "ctdoctor") {
		t.Errorf("image %q", got)
	}
	if len(neededCapabilities()) != 4 {
		t.Errorf("capabilities from the privileges text: %v, want four", neededCapabilities())
	}
}

// Each broken copy of the manifests is caught, for the reason the
// mutation introduced: the checks above are not vacuous.
func TestManifestsBrokenCopiesFail(t *testing.T) {
	orig, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	serve := exporterHandler(t)
	for _, tc := range []struct {
		name     string
		old, new string // the first occurrence of old becomes new
		want     string // in one of the errors
	}{
		// Strict decoding.
		{"misspelt field", "hostNetwork: true", "hostNetwrok: true", `unknown field "spec.template.spec.hostNetwrok"`},
		{"field in the wrong case", "readOnlyRootFilesystem: true", "readonlyRootFilesystem: true", `unknown field "spec.template.spec.containers[0].securityContext.readonlyRootFilesystem"`},
		{"field given twice", "      hostNetwork: true", "      hostPID: false\n      hostNetwork: true", `key "hostPID" already set in map`},
		{"wrong value type", "containerPort: 19630", `containerPort: "19630"`, "cannot unmarshal string into Go struct field ContainerPort"},
		{"unknown kind", "kind: DaemonSet", "kind: DeamonSet", `no kind "DeamonSet" is registered`},
		{"unregistered version", "apiVersion: apps/v1", "apiVersion: apps/v1beta2", `no kind "DaemonSet" is registered for version "apps/v1beta2"`},
		{"misspelt ServiceMonitor field", "  endpoints:", "  endpoint:", `unknown field "spec.endpoint"`},
		{"a kind the deployment has no use for", "kind: Namespace", "kind: ConfigMap", "unexpected kind /v1, Kind=ConfigMap"},
		// The DaemonSet.
		{"not on the host network", "hostNetwork: true", "hostNetwork: false", "hostNetwork is not true"},
		{"no hostPID with --all-netns", "hostPID: true", "hostPID: false", "--all-netns without hostPID"},
		{"selector misses the pods", "    matchLabels:\n      app.kubernetes.io/name: ctdoctor-exporter", "    matchLabels:\n      app.kubernetes.io/name: other", "does not select its pod template's labels"},
		{"an unknown flag", "- --all-netns", "- --all-netn", "exits 2"},
		{"privileged", "privileged: false", "privileged: true", "privileged is not false"},
		{"privilege escalation", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation is not false"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem is not true"},
		{"no seccomp profile", "type: RuntimeDefault", "type: Unconfined", "want RuntimeDefault"},
		{"capabilities kept", "drop: [ALL]", "drop: [NET_RAW]", "capabilities drop [NET_RAW], want [ALL]"},
		{"a capability too many", "add: [NET_ADMIN, SYS_ADMIN, SYS_PTRACE, SYSLOG]", "add: [NET_ADMIN, SYS_ADMIN, SYS_PTRACE, SYSLOG, SYS_MODULE]", "capabilities add [NET_ADMIN SYS_ADMIN SYS_PTRACE SYSLOG SYS_MODULE], want exactly"},
		{"a capability missing", "add: [NET_ADMIN, SYS_ADMIN, SYS_PTRACE, SYSLOG]", "add: [NET_ADMIN, SYS_ADMIN, SYS_PTRACE]", "want exactly [NET_ADMIN SYSLOG SYS_ADMIN SYS_PTRACE]"},
		{"the image's user with capabilities", "runAsUser: 0", "runAsUser: 65532", "the capabilities work only for uid 0 (the image's user is 65532:65532)"},
		{"no memory limit", "            limits:\n              memory: 256Mi", "            limits: {}", "no memory limit"},
		{"no cpu request", "cpu: 20m", "ephemeral-storage: 20Mi", "no cpu request"},
		{"request above limit", "memory: 32Mi", "memory: 512Mi", "memory request 512Mi above its limit 256Mi"},
		{"another port", "containerPort: 19630", "containerPort: 9100", "want a named TCP port 19630"},
		{"listen address elsewhere", "--web.listen-address=:19630", "--web.listen-address=:9100", "--web.listen-address=:9100 is not port 19630"},
		{"probe on a path the exporter does not serve", "path: /\n", "path: /healthz\n", `liveness probe path "/healthz": the exporter answers 404`},
		{"probe on another port", "              port: metrics\n            periodSeconds: 10", "              port: 8080\n            periodSeconds: 10", "readiness probe port 8080 is not the exporter's port"},
		{"a host directory writable", "              readOnly: true", "              readOnly: false", "is not mounted read-only"},
		{"token mounted", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken is not false"},
		// The Service and the ServiceMonitor.
		{"Service selects nothing", "  selector:\n    app.kubernetes.io/name: ctdoctor-exporter", "  selector:\n    app.kubernetes.io/name: node-exporter", "does not select the DaemonSet's pods"},
		{"Service targets another port", "targetPort: metrics", "targetPort: http", "none is a named port targeting"},
		{"ServiceMonitor selects another Service", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: ctdoctor-exporter\n  namespaceSelector", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: other\n  namespaceSelector", "does not select the Service's labels"},
		{"ServiceMonitor in another namespace", "matchNames: [ctdoctor]", "matchNames: [monitoring]", "leaves out the Service's namespace ctdoctor"},
		{"ServiceMonitor port name unknown", "    - port: metrics", "    - port: http-metrics", `endpoint port "http-metrics" is not the Service's port name "metrics"`},
		{"ServiceMonitor path", "path: /metrics", "path: /metric", `ServiceMonitor path "/metric"`},
		{"object in another namespace", "  name: ctdoctor-exporter\n  namespace: ctdoctor\n  labels:\n    app.kubernetes.io/name: ctdoctor-exporter\nspec:\n  clusterIP", "  name: ctdoctor-exporter\n  namespace: default\n  labels:\n    app.kubernetes.io/name: ctdoctor-exporter\nspec:\n  clusterIP", `is in namespace "default"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(orig, []byte(tc.old)) {
				t.Fatalf("the manifest no longer contains %q: update the mutation", tc.old)
			}
			broken := bytes.Replace(orig, []byte(tc.old), []byte(tc.new), 1)
			errs := check(broken, serve)
			if len(errs) == 0 {
				t.Fatalf("the broken copy passed")
			}
			msgs := fmt.Sprint(errs)
			if !strings.Contains(msgs, tc.want) {
				t.Errorf("errors %s\ndo not say %q", msgs, tc.want)
			}
		})
	}
}
