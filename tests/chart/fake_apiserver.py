"""A read-only stand-in for kube-apiserver, enough for `helm template --dry-run=server`.

It answers /version, API discovery for the kinds the chart renders, GETs of
the Secrets given in a JSON file ({"<namespace>/<name>": <Secret>}) and empty
Secret lists (Helm's release storage); everything else is 404. It writes
nothing, prints "PORT <n>" once it listens on 127.0.0.1, and logs every
request path on stderr.

    python fake_apiserver.py SECRETS_JSON
"""
import http.server
import json
import sys
import urllib.parse

GROUPS = {  # group -> (version, [(resource, kind, namespaced)])
    "": ("v1", [("secrets", "Secret", True), ("services", "Service", True),
                ("serviceaccounts", "ServiceAccount", True), ("namespaces", "Namespace", False)]),
    "apps": ("v1", [("deployments", "Deployment", True)]),
    "policy": ("v1", [("poddisruptionbudgets", "PodDisruptionBudget", True)]),
    "rbac.authorization.k8s.io": ("v1", [("clusterroles", "ClusterRole", False),
                                         ("clusterrolebindings", "ClusterRoleBinding", False)]),
    "admissionregistration.k8s.io": ("v1", [("mutatingwebhookconfigurations",
                                             "MutatingWebhookConfiguration", False)]),
}

with open(sys.argv[1]) as f:
    SECRETS = json.load(f)


def resource_list(group_version, resources):
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": [{"name": r, "singularName": k.lower(), "namespaced": n, "kind": k,
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}
                      for r, k, n in resources],
    }


def answer(path):
    if path == "/version":
        return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
    if path == "/api":
        return 200, {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
             "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
            for g, (v, _) in GROUPS.items() if g]}
    for group, (version, resources) in GROUPS.items():
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if path == base:
            return 200, resource_list(f"{group}/{version}" if group else version, resources)
    parts = path.split("/")
    # /api/v1/namespaces/<ns>/secrets[/<name>]
    if parts[1:3] == ["api", "v1"] and len(parts) >= 6 and parts[3] == "namespaces" and parts[5] == "secrets":
        if len(parts) == 6:
            return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
        key = f"{parts[4]}/{parts[6]}"
        if len(parts) == 7 and key in SECRETS:
            return 200, SECRETS[key]
    return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path.rstrip("/")
        sys.stderr.write(f"GET {self.path}\n")
        code, body = answer(path)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
