package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DemoRuleset is the firewall of the new user who hit the broken fixes: a
// table inet fw (not "inet filter"), input policy drop, established and
// related accepted, new connections to 80 and 8081 accepted, loopback not
// accepted as a whole. NOTRACK without an accept rule for untracked
// packets takes nginx down under it.
const DemoRuleset = `table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport { 80, 8081 } ct state new accept
	}
}
`

// nginxConf proxies 127.0.0.1:80 to an upstream on 127.0.0.1:8081 (a
// second server block) with a new upstream connection per request, as
// nginx does without upstream keepalive. One process, no workers.
const nginxConf = `master_process off;
daemon off;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path DIR/body;
	proxy_temp_path DIR/proxy;
	fastcgi_temp_path DIR/fastcgi;
	uwsgi_temp_path DIR/uwsgi;
	scgi_temp_path DIR/scgi;
	upstream app { server 127.0.0.1:8081; }
	server { listen LISTEN; location / { proxy_pass http://app; } }
	server { listen 127.0.0.1:8081; location / { return 200 "upstream\n"; } }
}
`

// StartNginx runs nginx in the namespace — 127.0.0.1:80 proxying to a
// local upstream on 127.0.0.1:8081 — until the test ends, and waits until
// it answers 200. The namespace's firewall must let it (see DemoRuleset).
func (n *NS) StartNginx() { n.StartNginxOn("127.0.0.1:80") }

// StartNginxOn is StartNginx with the proxy listening on listen (an nginx
// listen value: "80" for every address).
func (n *NS) StartNginxOn(listen string) {
	t := n.t
	t.Helper()
	Require(t, "nginx", "curl")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(strings.NewReplacer("DIR", dir, "LISTEN", listen).Replace(nginxConf)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the one process this test started
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %v: %s %s", err, out.String(), log)
		default:
		}
		if n.Curl(2) == "200" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nginx did not answer 200 within 10 s")
}

// Curl fetches http://127.0.0.1/ in the namespace and returns the HTTP
// status ("000" when the connection failed or timed out).
func (n *NS) Curl(timeoutSeconds int) string {
	out, _ := n.Output("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", strconv.Itoa(timeoutSeconds), "http://127.0.0.1/")
	return strings.TrimSpace(out)
}

// CurlOK fails the test unless count requests in a row answer 200.
func (n *NS) CurlOK(count int, when string) {
	n.t.Helper()
	for i := range count {
		if code := n.Curl(5); code != "200" {
			n.t.Fatalf("%s: request %d of %d: HTTP %s, want 200", when, i+1, count, code)
		}
	}
}

// LoopbackEntries counts the namespace's conntrack entries between
// loopback addresses to the given destination ports (all when none), by
// conntrack -L.
func (n *NS) LoopbackEntries(ports ...int) int {
	n.t.Helper()
	out := n.Run("conntrack", "-L")
	count := 0
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.Contains(line, "src=127.0.0.1 dst=127.0.0.1") {
			continue
		}
		if len(ports) == 0 {
			count++
			continue
		}
		for _, p := range ports {
			if strings.Contains(line, fmt.Sprintf(" dport=%d ", p)) {
				count++
				break
			}
		}
	}
	return count
}
