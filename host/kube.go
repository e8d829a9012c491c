package host

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// kube-proxy's conntrack defaults (pkg/proxy/apis/config defaults):
// nf_conntrack_max = max(maxPerCore × CPUs, min), hashsize = max/4,
// tcp_timeout_established = 1 day, tcp_timeout_close_wait = 1 hour.
const (
	kubeMaxPerCore     = 32768
	kubeMin            = 131072
	kubeEstablished    = 86400
	kubeCloseWait      = 3600
	kubeProxyComm      = "kube-proxy"
	kubeProxyStateDir  = "var/lib/kube-proxy"
	kubernetesConfDir  = "etc/kubernetes"
	maxKubeCmdlineShow = 200
)

// KubeProxyMax is the nf_conntrack_max kube-proxy sets on a node with the
// given CPUs under its default configuration.
func KubeProxyMax(cpus int) int64 {
	return max(int64(kubeMaxPerCore)*int64(cpus), kubeMin)
}

// kubeProxy gathers the signs that kube-proxy manages the conntrack
// sysctls (and would overwrite a tuned value at its next start).
func (r *reader) kubeProxy(s *Snapshot) KubeProxy {
	var k KubeProxy
	strong := false
	if pid, cmdline := r.findProcess(kubeProxyComm); pid != "" {
		ev := "process " + kubeProxyComm + " running (pid " + pid + ")"
		if cmdline != "" {
			ev += ": " + cmdline
		}
		k.Evidence = append(k.Evidence, ev)
		strong = true
	}
	if st, err := os.Stat(r.path(kubeProxyStateDir)); err == nil && st.IsDir() {
		k.Evidence = append(k.Evidence, "/"+kubeProxyStateDir+" exists")
		strong = true
	}
	if st, err := os.Stat(r.path(kubernetesConfDir)); err == nil && st.IsDir() {
		k.Evidence = append(k.Evidence, "/"+kubernetesConfDir+" exists (a Kubernetes node)")
	}
	set := s.Settings
	if s.CPUs > 0 && set.Max > 0 && set.Max == KubeProxyMax(s.CPUs) &&
		set.Timeouts["tcp_timeout_established"] == kubeEstablished && set.Timeouts["tcp_timeout_close_wait"] == kubeCloseWait {
		ev := fmt.Sprintf("sysctls match kube-proxy's defaults: nf_conntrack_max %d = max(%d × %d CPUs, %d), tcp_timeout_established %d, tcp_timeout_close_wait %d",
			set.Max, kubeMaxPerCore, s.CPUs, kubeMin, kubeEstablished, kubeCloseWait)
		if set.HashSize > 0 && set.HashSize == set.Max/4 {
			ev += fmt.Sprintf(", hashsize %d = max/4", set.HashSize)
		}
		k.Evidence = append(k.Evidence, ev)
		strong = true
	}
	k.Present = strong
	return k
}

// findProcess returns the lowest PID whose comm is name, with its command line.
func (r *reader) findProcess(name string) (pid, cmdline string) {
	dir := r.path("proc")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", ""
	}
	best := -1
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 || (best >= 0 && n >= best) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		best = n
	}
	if best < 0 {
		return "", ""
	}
	pid = strconv.Itoa(best)
	if b, err := os.ReadFile(filepath.Join(dir, pid, "cmdline")); err == nil {
		cmdline = strings.TrimSpace(string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '})))
		if len(cmdline) > maxKubeCmdlineShow {
			cmdline = cmdline[:maxKubeCmdlineShow] + "…"
		}
	}
	return pid, cmdline
}
