"""runwarden's own calls, held to the documents: a real `runwarden apply` runs against a fresh
simulator, and every request in the simulator's log (`GET /sim/requests`) must be a method of
the Google discovery documents (HTTP method, path matching the method's path template and its
parameters' patterns, every query parameter declared) or an operation of Auth0's Management API
(the reference OpenAPI document; the group endpoints it predates from auth0-python 6.x). And it
must have succeeded: a 4xx means runwarden and the simulator disagree about the API."""

import json
import os
import re
import subprocess
import unittest
from urllib.parse import parse_qsl

import yaml

import sim as simmod
from test_auth0 import AUTH0_OPENAPI
from test_google import REFERENCE

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Endpoints the reference OpenAPI document predates, as auth0-python 6.8 calls them:
# auth0/management/roles/groups/raw_client.py (GET roles/{id}/groups: from, take) and
# auth0/management/groups/members/raw_client.py (GET groups/{id}/members: fields,
# include_fields, from, take).
AUTH0_SDK_ONLY = {
    ("GET", "/roles/{id}/groups"): {"from", "take"},
    ("GET", "/groups/{id}/members"): {"fields", "include_fields", "from", "take"},
}


def google_methods():
    """(http method, compiled path regex, declared query parameters, id) of every method."""
    out = []

    def walk(node, doc):
        for m in node.get("methods", {}).values():
            params = m.get("parameters", {})
            pattern = ""
            for part in re.split(r"(\{\+?[^}]+\})", m["path"]):
                var = re.fullmatch(r"\{\+?([^}]+)\}", part)
                if var:
                    p = params.get(var.group(1), {}).get("pattern", "^[^/]+$")
                    pattern += "(?:" + p.lstrip("^").rstrip("$") + ")"
                else:
                    pattern += re.escape(part)
            query = {k for k, v in params.items() if v.get("location") == "query"}
            literal = len(re.sub(r"\{[^}]+\}", "", m["path"]))
            out.append((m["httpMethod"], re.compile("^/" + doc["servicePath"] + pattern + "$"), query, m["id"], literal))
        for r in node.get("resources", {}).values():
            walk(r, doc)

    for name in ("run.v2", "iap.v1", "cloudresourcemanager.v3", "serviceusage.v1beta1", "iam.v1", "logging.v2"):
        with open(os.path.join(REFERENCE, f"{name}.json")) as f:
            doc = json.load(f)
        walk(doc, doc)
    # Standard query parameters every Google API accepts (discovery `parameters` at the top).
    return out


def auth0_operations():
    with open(AUTH0_OPENAPI) as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            query = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            out.append((method.upper(), path, query))
    out += [(m, p, q) for (m, p), q in AUTH0_SDK_ONLY.items()]
    return [(m, re.compile("^/api/v2" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), q, p, len(re.sub(r"\{[^}]+\}", "", p)))
            for m, p, q in out]


class RunwardenRequests(unittest.TestCase):
    def test_every_call_of_an_apply_is_a_documented_method_with_documented_parameters(self):
        sim = simmod.Sim()
        try:
            env = dict(os.environ, **sim.env, NO_COLOR="1")
            binary = os.environ.get("RUNWARDEN_BIN", os.path.join(ROOT, "target", "debug", "runwarden"))
            policies = os.path.join(ROOT, "policies")
            # apply reads and writes; audit reads the tenant's APIs and signing keys.
            for args, ok in ((["apply", "--auto-approve"], {0}), (["audit"], {0, 2})):
                run = subprocess.run([binary, *args, "--policies", policies],
                                     env=env, capture_output=True, text=True, timeout=120)
                self.assertIn(run.returncode, ok, f"runwarden {args}: {run.stdout}{run.stderr}")
            log = sim.admin("GET", "/sim/requests")
        finally:
            sim.stop()
        google, auth0 = google_methods(), auth0_operations()
        problems, matched = [], set()
        for r in log:
            method, path, query = r["method"], r["path"], r["query"]
            names = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
            if path in ("/token", "/oauth/token") or path.startswith("/.well-known/"):
                continue
            table = auth0 if path.startswith("/api/v2/") else google
            found = [e for e in table if e[0] == method and e[1].match(path)]
            if not found:
                problems.append(f"{method} {path}: no such method in the documents")
                continue
            # The most specific template wins (`v2/{+resource}:getIamPolicy` over `v2/{+name}`).
            best = max(found, key=lambda e: e[4])
            declared = best[2]
            if names - declared:
                problems.append(f"{method} {path}?{query}: undeclared query parameters {sorted(names - declared)}")
            if r["status"] >= 400:
                problems.append(f"{method} {path}?{query}: answered {r['status']}")
            matched.add(best[3])
        # The demo switches IAP on in a project that never used it: the IAP service agent is
        # created first (issue 14).
        for needed in ("run.projects.locations.services.getIamPolicy", "iap.getIamPolicy", "/keys/signing",
                       "/resource-servers", "run.projects.locations.services.patch",
                       "serviceusage.services.generateServiceIdentity"):
            self.assertIn(needed, matched)
        self.assertGreater(len(matched), 8, f"the apply exercised too few methods: {sorted(matched)}")
        self.assertFalse(problems, "runwarden's requests that the documents do not describe:\n  " + "\n  ".join(problems))
