package deploy

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/linkgate/linkgate/internal/clicks"
	"github.com/linkgate/linkgate/internal/quiesce"
	"github.com/linkgate/linkgate/internal/testenv"
)

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// manifests use. It is not in client-go's scheme, so it is decoded strictly
// into this struct: a field it does not declare is an error.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// rendered is one kustomize output, decoded.
type rendered struct {
	configMaps  []*corev1.ConfigMap
	services    []*corev1.Service
	deployments []*appsv1.Deployment
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*serviceMonitor
}

// strictDecoder decodes YAML into the typed Kubernetes objects of the kinds
// the manifests contain, rejecting unknown and duplicate fields.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatalf("scheme: %v", err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

// decodeManifests splits a multi-document YAML stream and decodes every
// document strictly, failing on any kind the manifests should not contain.
func decodeManifests(t *testing.T, stream []byte) rendered {
	t.Helper()
	dec := strictDecoder(t)
	var r rendered
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(stream), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if head.Kind == "ServiceMonitor" {
			var sm serviceMonitor
			yamlStrict(t, fmt.Sprintf("document %d (ServiceMonitor)", i), []byte(doc), &sm)
			if sm.APIVersion != "monitoring.coreos.com/v1" {
				t.Errorf("ServiceMonitor apiVersion %q, want monitoring.coreos.com/v1", sm.APIVersion)
			}
			r.monitors = append(r.monitors, &sm)
			continue
		}
		obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("document %d (%s %s): %v", i, head.APIVersion, head.Kind, err)
		}
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			r.configMaps = append(r.configMaps, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		default:
			t.Errorf("document %d: unexpected %v", i, gvk)
		}
	}
	for what, n := range map[string]int{"ConfigMap": len(r.configMaps), "Service": len(r.services),
		"Deployment": len(r.deployments), "HorizontalPodAutoscaler": len(r.hpas),
		"PodDisruptionBudget": len(r.pdbs), "ServiceMonitor": len(r.monitors)} {
		if n != 1 {
			t.Fatalf("want exactly one %s, got %d", what, n)
		}
	}
	return r
}

// kustomize renders a kustomization directory with kubectl's built-in
// kustomize.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	kubectl := testenv.Tool(t, "kubectl", "kubectl")
	return []byte(mustRun(t, repoRoot(t), 2*time.Minute, kubectl, "kustomize", dir))
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	dec := strictDecoder(t)
	typo := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n"
	if _, _, err := dec.Decode([]byte(typo), nil, nil); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("a Deployment with spec.replica decoded without error (%v)", err)
	}
	var sm serviceMonitor
	smTypo := "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints:\n  - port: http\n    pathh: /metrics\n"
	if err := yaml.UnmarshalStrict([]byte(smTypo), &sm); err == nil {
		t.Error("a ServiceMonitor with endpoints[].pathh decoded without error")
	}
}

func TestKustomizeBase(t *testing.T) {
	t.Parallel()
	r := decodeManifests(t, kustomize(t, "deploy/k8s/base"))
	checkManifests(t, r)
}

func TestKustomizeProduction(t *testing.T) {
	t.Parallel()
	r := decodeManifests(t, kustomize(t, "deploy/k8s/overlays/production"))
	checkManifests(t, r)

	d, h := r.deployments[0], r.hpas[0]
	for _, o := range []metav1.Object{d, h, r.configMaps[0], r.services[0], r.pdbs[0], &r.monitors[0].Metadata} {
		if o.GetNamespace() != "linkgate" {
			t.Errorf("%s is in namespace %q, want linkgate", o.GetName(), o.GetNamespace())
		}
	}
	img := d.Spec.Template.Spec.Containers[0].Image
	if m := regexp.MustCompile(`^[a-z0-9.-]+\.[a-z]+/[^:@]+(:[\w.-]+|@sha256:[0-9a-f]{64})$`).FindStringSubmatch(img); m == nil || m[1] == ":latest" {
		t.Errorf("production image %q: want a registry path pinned by tag or digest, not latest", img)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 12 {
		t.Errorf("production HPA min %v max %d, want 3 and 12", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	res := d.Spec.Template.Spec.Containers[0].Resources
	if res.Requests.Cpu().String() != "250m" || res.Limits.Memory().String() != "512Mi" {
		t.Errorf("production resources %v, want the overlay's (cpu request 250m, memory limit 512Mi)", res)
	}
}

// checkManifests holds for the base and every overlay.
func checkManifests(t *testing.T, r rendered) {
	t.Helper()
	cm, svc, d, hpa, pdb, sm := r.configMaps[0], r.services[0], r.deployments[0], r.hpas[0], r.pdbs[0], r.monitors[0]
	pod := d.Spec.Template

	// Settings: the ConfigMap, plus stand-ins for the Secret's values, must
	// load through internal/config.
	env := map[string]string{}
	for k, v := range cm.Data {
		env[k] = v
	}
	env["LINKGATE_DATABASE_URL"] = "postgres://linkgate:secret@postgres:5432/linkgate"
	env["LINKGATE_ADMIN_KEY"] = "0123456789abcdef0123456789abcdef"
	cfg := checkSettings(t, "ConfigMap "+cm.Name, env)

	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas=%d; the HPA owns the count", *d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(k8slabels.Set(pod.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod labels %v", d.Spec.Selector, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// The port linkgate listens on, named for the probes and the Service.
	_, addrPort, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		t.Fatalf("LINKGATE_ADDR %q: %v", cfg.Addr, err)
	}
	var port corev1.ContainerPort
	for _, p := range c.Ports {
		if strconv.Itoa(int(p.ContainerPort)) == addrPort {
			port = p
		}
	}
	if port.Name == "" {
		t.Fatalf("no named container port %s (LINKGATE_ADDR) in %+v", addrPort, c.Ports)
	}
	resolves := func(p intstr.IntOrString) bool {
		return (p.Type == intstr.String && p.StrVal == port.Name) || (p.Type == intstr.Int && p.IntVal == port.ContainerPort)
	}
	for name, pr := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"startupProbe": {c.StartupProbe, "/ready"}, "readinessProbe": {c.ReadinessProbe, "/ready"}, "livenessProbe": {c.LivenessProbe, "/live"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || !resolves(pr.probe.HTTPGet.Port) {
			t.Errorf("%s: GET %s on port %v, want %s on the container port %s/%d",
				name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port.String(), pr.path, port.Name, port.ContainerPort)
		}
	}

	// Shutdown fits in the grace period.
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("no preStop sleep action")
	} else {
		if c.Lifecycle.PreStop.Exec != nil {
			t.Error("preStop execs a command; the distroless image has none")
		}
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop <= 0 {
			t.Error("preStop sleep of zero seconds")
		}
	}
	// Then the grace of requests still running, then the final click flush.
	need := preStop + cfg.ShutdownDelay + cfg.DrainTimeout + quiesce.DefaultMaxWait + cfg.StoreTimeout + clicks.DefaultFlushTimeout
	var grace time.Duration
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= 25*time.Second || grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed 25s and preStop %v + shutdown delay %v + drain %v + accept queue wait %v + store timeout %v + click flush %v = %v",
			grace, preStop, cfg.ShutdownDelay, cfg.DrainTimeout, quiesce.DefaultMaxWait, cfg.StoreTimeout, clicks.DefaultFlushTimeout, need)
	}

	// Resources.
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[name]
		lim, okLim := c.Resources.Limits[name]
		if !okReq || !okLim {
			t.Errorf("%s: want both request and limit", name)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s request %s above limit %s", name, req.String(), lim.String())
		}
	}

	// Security context.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatal("want both pod and container security contexts")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot {
		t.Error("runAsNonRoot must be true for pod and container")
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Error("runAsUser 0")
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Error("privileged container")
	}
	if csc.Capabilities == nil || len(csc.Capabilities.Drop) != 1 || csc.Capabilities.Drop[0] != "ALL" || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and no add", csc.Capabilities)
	}
	for where, sp := range map[string]*corev1.SeccompProfile{"pod": psc.SeccompProfile, "container": csc.SeccompProfile} {
		if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s seccompProfile %+v, want RuntimeDefault", where, sp)
		}
	}

	// Spread: preferred anti-affinity across nodes, topology spread across zones.
	podSet := k8slabels.Set(pod.Labels)
	matchesPods := func(ls *metav1.LabelSelector) bool {
		s, err := metav1.LabelSelectorAsSelector(ls)
		return err == nil && !s.Empty() && s.Matches(podSet)
	}
	aff := pod.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Error("no preferred pod anti-affinity")
	} else {
		term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
		if term.TopologyKey != "kubernetes.io/hostname" || !matchesPods(term.LabelSelector) {
			t.Errorf("anti-affinity %+v should spread this Deployment's pods across nodes", term)
		}
	}
	if aff != nil && aff.PodAntiAffinity != nil && len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
		t.Error("required anti-affinity would leave pods pending when nodes run out; prefer it")
	}
	if len(pod.Spec.TopologySpreadConstraints) == 0 || !matchesPods(pod.Spec.TopologySpreadConstraints[0].LabelSelector) {
		t.Error("no topology spread constraint over this Deployment's pods")
	}

	// Settings come from the ConfigMap and the (unshipped) Secret.
	fromCM := false
	for _, ef := range c.EnvFrom {
		fromCM = fromCM || (ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == cm.Name)
	}
	if !fromCM {
		t.Errorf("container does not load ConfigMap %s with envFrom", cm.Name)
	}
	secretEnv := map[string]*corev1.SecretKeySelector{}
	for _, e := range c.Env {
		if e.Value != "" && (e.Name == "LINKGATE_ADMIN_KEY" || e.Name == "LINKGATE_DATABASE_URL") {
			t.Errorf("%s is set in plain text", e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretEnv[e.Name] = e.ValueFrom.SecretKeyRef
		}
	}
	for _, name := range []string{"LINKGATE_ADMIN_KEY", "LINKGATE_DATABASE_URL"} {
		if secretEnv[name] == nil {
			t.Errorf("%s does not come from a Secret", name)
		}
	}
	for _, k := range []string{"LINKGATE_ADMIN_KEY", "LINKGATE_DATABASE_URL"} {
		if _, inCM := cm.Data[k]; inCM {
			t.Errorf("ConfigMap holds secret setting %s", k)
		}
	}

	// Service, HPA, PDB and ServiceMonitor point at this Deployment.
	if !k8slabels.SelectorFromSet(svc.Spec.Selector).Matches(podSet) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, pod.Labels)
	}
	var svcPort *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if resolves(svc.Spec.Ports[i].TargetPort) {
			svcPort = &svc.Spec.Ports[i]
		}
	}
	if svcPort == nil || svcPort.Name == "" {
		t.Fatalf("no named Service port targets the container port %s", port.Name)
	}
	ref := hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HPA scales %+v, want Deployment %s", ref, d.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("HPA min %v max %d: want min >= 2 and max > min", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	} else if cfg.Instances != int(*hpa.Spec.MinReplicas) {
		t.Errorf("LINKGATE_INSTANCES=%d but HPA minReplicas=%d: the fallback limiter divides by the former", cfg.Instances, *hpa.Spec.MinReplicas)
	}
	if len(hpa.Spec.Metrics) == 0 {
		t.Error("HPA has no metric")
	}
	if !matchesPods(pdb.Spec.Selector) {
		t.Errorf("PDB selector %v does not select the pods", pdb.Spec.Selector)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("PDB sets neither maxUnavailable nor minAvailable")
	}
	if mu := pdb.Spec.MaxUnavailable; mu != nil && mu.Type == intstr.Int && mu.IntVal < 1 {
		t.Error("PDB maxUnavailable < 1 blocks every drain")
	}
	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || smSel.Empty() || !smSel.Matches(k8slabels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select Service labels %v", sm.Spec.Selector, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svcPort.Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want /metrics on Service port %q", sm.Spec.Endpoints, svcPort.Name)
	}
	if sm.Spec.JobLabel == "" && svc.Name != "linkgate" {
		t.Errorf("job label would be %q; the alert rules and dashboard select job=\"linkgate\"", svc.Name)
	}
}
