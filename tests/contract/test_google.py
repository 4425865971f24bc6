"""The simulator's Google APIs, driven by google-api-python-client built from the discovery
documents in shared/reference/google/ (build_from_document: no network), and every response
checked against the method's response schema in the same document, recursively: each field must
be a property of its schema, with the schema's type, format and enum. Errors are checked against
Google's error model (google.rpc.Status in JSON: AIP-193, "Errors")."""

import json
import os

import google_auth_httplib2
import httplib2
from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from contract import Contract
from shapes import check_schema

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.environ.get(
    "RUNWARDEN_GOOGLE_REFERENCE",
    os.path.join(os.path.dirname(ROOT), "shared", "reference", "google"),
)

PROJECT, NUMBER, REGION = "acme-prod", "123456789012", "europe-west1"  # deploy/local/world.yaml
SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/billing-api"
FOLDER, ORG = "200000000001", "100000000001"  # acme-prod's folder and organization


def discovery(name):
    """A discovery document from shared/reference/google (beside the repository, as in CI)."""
    path = os.path.join(REFERENCE, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: set RUNWARDEN_GOOGLE_REFERENCE to the folder "
                                "holding the discovery documents")
    with open(path) as f:
        return json.load(f)


# google.rpc.Code names (googleapis/google/rpc/code.proto), the `status` of an error body.
RPC_CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
             "ALREADY_EXISTS", "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED",
             "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
             "UNAVAILABLE", "DATA_LOSS"]
# The JSON error body of Google APIs (AIP-193): {"error": {code, message, status, details[]}},
# each detail an Any with "@type" (google.rpc.ErrorInfo, RetryInfo, ...). Written in the
# discovery documents' schema language so the same checker applies.
ERROR_DOC = {"schemas": {
    "Error": {"id": "Error", "type": "object", "properties": {
        "error": {"$ref": "Status"}}},
    "Status": {"id": "Status", "type": "object", "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "status": {"type": "string", "enum": RPC_CODES},
        "details": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "any"}}},
    }},
}}


def error_problems(status, body, rpc_status):
    problems = check_schema(body, {"$ref": "Error"}, ERROR_DOC)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    if err.get("code") != status:
        problems.append(f"$.error.code: {err.get('code')!r} is not the HTTP status {status}")
    if err.get("status") != rpc_status:
        problems.append(f"$.error.status: {err.get('status')!r}, expected {rpc_status}")
    for i, d in enumerate(err.get("details", [])):
        if not str(d.get("@type", "")).startswith("type.googleapis.com/"):
            problems.append(f"$.error.details[{i}]: no type.googleapis.com/ @type")
    return problems


class Recording(httplib2.Http):
    """httplib2 that keeps every exchange: (method, uri, status, body bytes)."""

    def __init__(self):
        super().__init__(timeout=20)
        self.log = []

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):
        resp, content = super().request(uri, method, body, headers, *args, **kwargs)
        self.log.append((method, uri, resp.status, content, resp))
        return resp, content


def method_schema(doc, *path):
    """The response schema of a method, e.g. ("projects", "locations", "services", "get")."""
    node = doc
    for p in path[:-1]:
        node = node["resources"][p]
    return node["methods"][path[-1]]["response"]


class GoogleContract(Contract):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        creds = service_account.Credentials.from_service_account_file(
            cls.sim.env["GOOGLE_APPLICATION_CREDENTIALS"],
            scopes=["https://www.googleapis.com/auth/cloud-platform"])
        cls.recording = Recording()
        http = google_auth_httplib2.AuthorizedHttp(creds, http=cls.recording)
        opts = {"api_endpoint": cls.sim.endpoint + "/"}
        cls.docs = {n: discovery(f"{n}.json")
                    for n in ("run.v2", "iap.v1", "cloudresourcemanager.v3", "serviceusage.v1beta1", "iam.v1", "logging.v2")}
        cls.runapi = build_from_document(cls.docs["run.v2"], http=http, client_options=opts)
        cls.iap = build_from_document(cls.docs["iap.v1"], http=http, client_options=opts)
        cls.crm = build_from_document(cls.docs["cloudresourcemanager.v3"], http=http, client_options=opts)
        cls.serviceusage = build_from_document(cls.docs["serviceusage.v1beta1"], http=http, client_options=opts)
        cls.iamapi = build_from_document(cls.docs["iam.v1"], http=http, client_options=opts)
        cls.logging = build_from_document(cls.docs["logging.v2"], http=http, client_options=opts)

    def setUp(self):
        self.recording.log.clear()

    def checked(self, check, request, doc, *method):
        """Executes `request` and checks the raw JSON answer against the method's response schema."""
        result = request.execute()
        method_, uri, status, content, _ = self.recording.log[-1]
        self.assertEqual(status, 200, uri)
        body = json.loads(content)
        self.expect(check, check_schema(body, method_schema(self.docs[doc], *method), self.docs[doc]),
                    f"{method_} {uri}")
        return result

    def services(self):
        return self.runapi.projects().locations().services()

    def failing(self, request):
        with self.assertRaises(HttpError) as caught:
            request.execute()
        e = caught.exception
        return e, json.loads(e.content)

    # ---------------------------------------------------------------- reads

    def test_services_list_pages_with_page_token_and_matches_list_services_response(self):
        names, token, pages = [], None, 0
        while True:
            page = self.checked("google.run.services.list",
                                self.services().list(parent=f"projects/{PROJECT}/locations/{REGION}",
                                                     pageSize=1, pageToken=token),
                                "run.v2", "projects", "locations", "services", "list")
            pages += 1
            names += [s["name"] for s in page.get("services", [])]
            token = page.get("nextPageToken")
            if not token:
                break
            self.assertLess(pages, 100, "paging does not end")
        self.assertGreater(pages, 1, "pageSize=1 must page")
        self.assertEqual(len(names), len(set(names)), "paging repeated a service")
        self.assertIn(SERVICE, names)

    def test_services_get_matches_the_service_schema(self):
        svc = self.checked("google.run.services.get", self.services().get(name=SERVICE),
                           "run.v2", "projects", "locations", "services", "get")
        self.assertEqual(svc["name"], SERVICE)

    def test_run_get_iam_policy_matches_the_policy_schema(self):
        self.checked("google.run.services.getIamPolicy",
                     self.services().getIamPolicy(resource=SERVICE, options_requestedPolicyVersion=3),
                     "run.v2", "projects", "locations", "services", "getIamPolicy")

    def test_iap_get_iam_policy_matches_the_policy_schema(self):
        resource = f"projects/{NUMBER}/iap_web/cloud_run-{REGION}/services/billing-api"
        self.checked("google.iap.getIamPolicy",
                     self.iap.v1().getIamPolicy(resource=resource, body={"options": {"requestedPolicyVersion": 3}}),
                     "iap.v1", "v1", "getIamPolicy")

    def test_resource_manager_projects_get_matches_the_project_schema(self):
        p = self.checked("google.crm.projects.get", self.crm.projects().get(name=f"projects/{PROJECT}"),
                         "cloudresourcemanager.v3", "projects", "get")
        self.assertEqual(p["name"], f"projects/{NUMBER}")

    def test_resource_manager_project_get_iam_policy_matches_the_policy_schema(self):
        p = self.checked("google.crm.projects.getIamPolicy",
                         self.crm.projects().getIamPolicy(
                             resource=f"projects/{PROJECT}", body={"options": {"requestedPolicyVersion": 3}}),
                         "cloudresourcemanager.v3", "projects", "getIamPolicy")
        roles = {b["role"]: b["members"] for b in p.get("bindings", [])}
        self.assertIn("group:billing-devs@acme.com", roles.get("roles/run.developer", []))
        e, body = self.failing(self.crm.projects().getIamPolicy(resource="projects/not-a-project", body={}))
        self.assertEqual(e.status_code, 403)
        self.expect("google.error.403", error_problems(403, body, "PERMISSION_DENIED"))

    def test_resource_manager_projects_get_names_the_parent_folder(self):
        p = self.crm.projects().get(name=f"projects/{PROJECT}").execute()
        self.assertEqual(p["parent"], f"folders/{FOLDER}")

    def test_resource_manager_folders_get_matches_the_folder_schema(self):
        f = self.checked("google.crm.folders.get", self.crm.folders().get(name=f"folders/{FOLDER}"),
                         "cloudresourcemanager.v3", "folders", "get")
        self.assertEqual((f["name"], f["parent"]), (f"folders/{FOLDER}", f"organizations/{ORG}"))
        e, body = self.failing(self.crm.folders().get(name="folders/999"))
        self.assertEqual(e.status_code, 403)
        self.expect("google.error.403", error_problems(403, body, "PERMISSION_DENIED"))

    def test_resource_manager_folder_get_iam_policy_matches_the_policy_schema(self):
        p = self.checked("google.crm.folders.getIamPolicy",
                         self.crm.folders().getIamPolicy(
                             resource=f"folders/{FOLDER}", body={"options": {"requestedPolicyVersion": 3}}),
                         "cloudresourcemanager.v3", "folders", "getIamPolicy")
        roles = {b["role"]: b["members"] for b in p.get("bindings", [])}
        self.assertIn("group:oncall@acme.com", roles.get("roles/run.invoker", []))
        e, body = self.failing(self.crm.folders().getIamPolicy(resource="folders/999", body={}))
        self.assertEqual(e.status_code, 403)
        self.expect("google.error.403", error_problems(403, body, "PERMISSION_DENIED"))

    def test_resource_manager_organization_get_iam_policy_matches_the_policy_schema(self):
        p = self.checked("google.crm.organizations.getIamPolicy",
                         self.crm.organizations().getIamPolicy(
                             resource=f"organizations/{ORG}", body={"options": {"requestedPolicyVersion": 3}}),
                         "cloudresourcemanager.v3", "organizations", "getIamPolicy")
        self.assertTrue(p.get("bindings"), "the demo world's organization has a binding")
        e, body = self.failing(self.crm.organizations().getIamPolicy(resource="organizations/999", body={}))
        self.assertEqual(e.status_code, 403)
        self.expect("google.error.403", error_problems(403, body, "PERMISSION_DENIED"))

    def test_iam_roles_get_matches_the_role_schema_and_lists_included_permissions(self):
        r = self.checked("google.iam.roles.get", self.iamapi.roles().get(name="roles/run.developer"),
                         "iam.v1", "roles", "get")
        self.assertEqual(r["name"], "roles/run.developer")
        self.assertIn("run.routes.invoke", r["includedPermissions"])
        viewer = self.iamapi.roles().get(name="roles/viewer").execute()
        self.assertNotIn("run.routes.invoke", viewer["includedPermissions"])
        e, body = self.failing(self.iamapi.roles().get(name="roles/no.suchRole"))
        self.assertEqual(e.status_code, 404)
        self.expect("google.error.404", error_problems(404, body, "NOT_FOUND"))

    def test_iam_projects_roles_get_of_an_absent_custom_role_is_a_404(self):
        e, body = self.failing(self.iamapi.projects().roles().get(name=f"projects/{PROJECT}/roles/absent"))
        self.assertEqual(e.status_code, 404)
        self.expect("google.error.404", error_problems(404, body, "NOT_FOUND"))

    def test_logging_entries_list_matches_the_schema_and_filters_on_resource_and_method(self):
        resource = SERVICE
        body = {"resourceNames": [f"projects/{PROJECT}"], "orderBy": "timestamp desc", "pageSize": 20,
                "filter": f'logName="projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity" AND '
                          f'protoPayload.resourceName="{resource}" AND protoPayload.methodName:"SetIamPolicy"'}
        r = self.checked("google.logging.entries.list", self.logging.entries().list(body=body),
                         "logging.v2", "entries", "list")
        entries = r.get("entries", [])
        self.assertTrue(entries, "the demo world's history has entries for billing-api")
        for e in entries:
            p = e["protoPayload"]
            self.assertEqual(p["@type"], "type.googleapis.com/google.cloud.audit.AuditLog")
            self.assertEqual(p["resourceName"], resource)
            self.assertIn("SetIamPolicy", p["methodName"])
            self.assertTrue(p["authenticationInfo"]["principalEmail"])
            for d in p["serviceData"]["policyDelta"]["bindingDeltas"]:
                self.assertIn(d["action"], ("ADD", "REMOVE"))
        stamps = [e["timestamp"] for e in entries]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        e, err = self.failing(self.logging.entries().list(body={"filter": 'severity>="ERROR"'}))
        self.assertEqual(e.status_code, 400)
        self.expect("google.error.400", error_problems(400, err, "INVALID_ARGUMENT"))

    def test_logging_entries_list_serves_update_service_entries_with_the_request(self):
        resource = f"projects/{PROJECT}/locations/{REGION}/services/payments-api"
        body = {"resourceNames": [f"projects/{PROJECT}"], "orderBy": "timestamp desc", "pageSize": 20,
                "filter": f'logName="projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity" AND '
                          f'protoPayload.resourceName="{resource}" AND protoPayload.methodName:"UpdateService"'}
        r = self.checked("google.logging.entries.list", self.logging.entries().list(body=body),
                         "logging.v2", "entries", "list")
        entries = r.get("entries", [])
        self.assertTrue(entries, "the demo world's settingsHistory has an entry for payments-api")
        for e in entries:
            p = e["protoPayload"]
            self.assertEqual(p["methodName"], "google.cloud.run.v2.Services.UpdateService")
            self.assertEqual(p["resourceName"], resource)
            req = p["request"]
            self.assertEqual(req["@type"], "type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest")
            self.assertEqual(req["service"]["name"], resource)
            self.assertIsInstance(req["updateMask"], str)
        self.assertEqual(entries[0]["protoPayload"]["request"]["service"].get("ingress"), "INGRESS_TRAFFIC_ALL")

    def test_logging_entries_list_serves_v1_replace_service_entries_of_the_region_with_or_groups(self):
        # `gcloud run services update` is a Cloud Run v1 ReplaceService (gcloud's lib,
        # command_lib/run/serverless_operations.py): logged on namespaces/P/services/S, the region
        # in resource.labels.location and the request, the settings in the Knative annotations.
        name, v2 = "admin-console", f"projects/{PROJECT}/locations/{REGION}/services/admin-console"
        body = {"resourceNames": [f"projects/{PROJECT}"], "orderBy": "timestamp desc", "pageSize": 20,
                "filter": f'logName="projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity" AND '
                          f'(protoPayload.resourceName="{v2}" OR protoPayload.resourceName="namespaces/{PROJECT}/services/{name}") AND '
                          f'(protoPayload.methodName:"UpdateService" OR protoPayload.methodName="google.cloud.run.v1.Services.ReplaceService") AND '
                          f'(protoPayload.resourceName="{v2}" OR resource.labels.location="{REGION}" OR protoPayload.request.region="{REGION}")'}
        r = self.checked("google.logging.entries.list", self.logging.entries().list(body=body),
                         "logging.v2", "entries", "list")
        entries = [e for e in r.get("entries", []) if e["protoPayload"]["methodName"].endswith("ReplaceService")]
        self.assertEqual(len(entries), 3, "the demo world's settingsHistory has three v1 entries for admin-console")
        for e in entries:
            p = e["protoPayload"]
            self.assertEqual(p["resourceName"], f"namespaces/{PROJECT}/services/{name}")
            self.assertEqual(e["resource"]["labels"]["location"], REGION)
            req = p["request"]
            self.assertEqual(req["@type"], "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest")
            self.assertEqual((req["name"], req["region"]), (v2, REGION))
            self.assertEqual((req["service"]["apiVersion"], req["service"]["kind"]), ("serving.knative.dev/v1", "Service"))
            self.assertIsInstance(req["service"]["metadata"]["annotations"], dict)
        notes = [e["protoPayload"]["request"]["service"]["metadata"]["annotations"] for e in entries]
        self.assertEqual([n.get("run.googleapis.com/iap-enabled") for n in notes], [None, None, "true"])
        self.assertEqual(notes[0].get("run.googleapis.com/ingress"), "all")
        # Another region's entries are not served for this one.
        other = body["filter"].replace(f'"{REGION}"', '"us-east4"').replace(v2, v2.replace(REGION, "us-east4"))
        r = self.checked("google.logging.entries.list", self.logging.entries().list(body={**body, "filter": other}),
                         "logging.v2", "entries", "list")
        self.assertEqual(r.get("entries", []), [])

    def test_every_service_and_policy_of_the_world_matches_the_schemas(self):
        state = self.sim.admin("GET", "/sim/state")
        numbers = {p["projectId"]: p["projectNumber"] for p in state["projects"]}
        self.assertGreater(len(state["services"]), 3)
        for svc in state["services"]:
            name = svc["name"]
            _, project, _, region, _, short = name.split("/")
            self.checked("google.run.services.get", self.services().get(name=name),
                         "run.v2", "projects", "locations", "services", "get")
            for version in (1, 3):
                self.checked("google.run.services.getIamPolicy",
                             self.services().getIamPolicy(resource=name, options_requestedPolicyVersion=version),
                             "run.v2", "projects", "locations", "services", "getIamPolicy")
            resource = f"projects/{numbers[project]}/iap_web/cloud_run-{region}/services/{short}"
            self.checked("google.iap.getIamPolicy",
                         self.iap.v1().getIamPolicy(resource=resource, body={"options": {"requestedPolicyVersion": 3}}),
                         "iap.v1", "v1", "getIamPolicy")

    # ---------------------------------------------------------------- writes

    def test_run_set_iam_policy_round_trips_and_matches_the_policy_schema(self):
        name = f"projects/{PROJECT}/locations/{REGION}/services/payments-api"
        policy = self.services().getIamPolicy(resource=name).execute()
        out = self.checked("google.run.services.setIamPolicy",
                           self.services().setIamPolicy(resource=name, body={"policy": policy}),
                           "run.v2", "projects", "locations", "services", "setIamPolicy")
        self.assertNotEqual(out["etag"], None)

    def test_iap_set_iam_policy_matches_the_policy_schema(self):
        resource = f"projects/{NUMBER}/iap_web/cloud_run-{REGION}/services/billing-api"
        policy = self.iap.v1().getIamPolicy(resource=resource, body={}).execute()
        self.checked("google.iap.setIamPolicy",
                     self.iap.v1().setIamPolicy(resource=resource, body={"policy": policy}),
                     "iap.v1", "v1", "setIamPolicy")

    def test_stale_etag_is_a_409_aborted_in_googles_error_shape(self):
        name = f"projects/{PROJECT}/locations/{REGION}/services/payments-api"
        policy = self.services().getIamPolicy(resource=name).execute()
        self.services().setIamPolicy(resource=name, body={"policy": policy}).execute()  # moves the etag
        e, body = self.failing(self.services().setIamPolicy(resource=name, body={"policy": policy}))
        self.assertEqual(e.status_code, 409)
        self.expect("google.error.409", error_problems(409, body, "ABORTED"))

    def test_patch_returns_an_operation_that_get_and_wait_finish(self):
        ops = self.runapi.projects().locations().operations()
        svc = self.services().get(name=SERVICE).execute()
        labels = dict(svc.get("labels", {}), contract="yes")
        op = self.checked("google.run.services.patch",
                          self.services().patch(name=SERVICE, updateMask="labels",
                                                body={"labels": labels, "etag": svc["etag"]}),
                          "run.v2", "projects", "locations", "services", "patch")
        # Cloud Run v2 documents services.patch's operation metadata as a Service.
        self.assertEqual(op["metadata"]["@type"], "type.googleapis.com/google.cloud.run.v2.Service")
        self.expect("google.run.operation.metadata",
                    check_schema({k: v for k, v in op.get("metadata", {}).items() if k != "@type"},
                                 {"$ref": "GoogleCloudRunV2Service"}, self.docs["run.v2"]))
        self.checked("google.run.operations.get", ops.get(name=op["name"]),
                     "run.v2", "projects", "locations", "operations", "get")
        done = op
        for _ in range(20):
            done = self.checked("google.run.operations.wait", ops.wait(name=op["name"], body={"timeout": "5s"}),
                                "run.v2", "projects", "locations", "operations", "wait")
            if done.get("done"):
                break
        self.assertTrue(done.get("done"), "the operation never finished")
        self.assertIn("response", done)
        self.expect("google.run.operation.response",
                    check_schema({k: v for k, v in done["response"].items() if k != "@type"},
                                 {"$ref": "GoogleCloudRunV2Service"}, self.docs["run.v2"]))
        self.assertEqual(self.services().get(name=SERVICE).execute()["labels"]["contract"], "yes")

    def test_annotations_are_a_string_map_replaced_whole_and_reserved_namespaces_are_refused(self):
        # run.v2.json GoogleCloudRunV2Service.annotations: a string map; the run.googleapis.com,
        # cloud.googleapis.com, serving.knative.dev and autoscaling.knative.dev namespaces are
        # rejected. runwarden keeps its last-applied record here (runwarden.dev/last-applied).
        ops = self.runapi.projects().locations().operations()
        svc = self.services().get(name=SERVICE).execute()
        record = '{"v":1,"grants":{"roles/run.invoker":{"user:bob@partner.example":"abc"}}}'
        annotations = dict(svc.get("annotations", {}), **{"runwarden.dev/last-applied": record})
        op = self.services().patch(name=SERVICE, updateMask="annotations",
                                   body={"annotations": annotations, "etag": svc["etag"]}).execute()
        ops.wait(name=op["name"], body={"timeout": "5s"}).execute()
        got = self.services().get(name=SERVICE).execute()
        self.assertEqual(got["annotations"], annotations)
        self.expect("google.run.service.annotations",
                    check_schema(got, {"$ref": "GoogleCloudRunV2Service"}, self.docs["run.v2"]))
        e, _ = self.failing(self.services().patch(name=SERVICE, updateMask="annotations",
                                                  body={"annotations": {"run.googleapis.com/x": "y"}}))
        self.assertEqual(e.status_code, 400)

    def test_every_documented_ingress_is_accepted_and_an_undocumented_one_is_a_400(self):
        ops = self.runapi.projects().locations().operations()
        name = f"projects/{PROJECT}/locations/us-central1/services/status-page"
        enum = self.docs["run.v2"]["schemas"]["GoogleCloudRunV2Service"]["properties"]["ingress"]["enum"]
        for value in enum:
            op = self.services().patch(name=name, updateMask="ingress", body={"ingress": value}).execute()
            ops.wait(name=op["name"], body={"timeout": "5s"}).execute()
            got = self.services().get(name=name).execute().get("ingress", "INGRESS_TRAFFIC_UNSPECIFIED")
            # UNSPECIFIED on write means the default, all traffic.
            self.assertEqual(got, "INGRESS_TRAFFIC_ALL" if value == "INGRESS_TRAFFIC_UNSPECIFIED" else value)
        e, body = self.failing(self.services().patch(name=name, updateMask="ingress",
                                                     body={"ingress": "INGRESS_TRAFFIC_PRIVATE"}))
        self.assertEqual(e.status_code, 400)
        self.expect("google.error.400", error_problems(400, body, "INVALID_ARGUMENT"))

    def test_a_failed_patch_operation_carries_a_google_rpc_status(self):
        ops = self.runapi.projects().locations().operations()
        svc = self.services().get(name=SERVICE).execute()
        self.sim.faults({"operationFailureRate": 1.0})
        try:
            op = self.services().patch(name=SERVICE, updateMask="labels",
                                       body={"labels": dict(svc.get("labels", {}), failing="yes")}).execute()
            done = op
            for _ in range(20):
                done = self.checked("google.run.operations.wait.failed",
                                    ops.wait(name=op["name"], body={"timeout": "5s"}),
                                    "run.v2", "projects", "locations", "operations", "wait")
                if done.get("done"):
                    break
        finally:
            self.sim.faults({})
        self.assertTrue(done.get("done"), "the operation never finished")
        self.assertIn("error", done)
        self.assertNotIn("response", done)
        self.assertIn(done["error"].get("code"), range(1, 17), "a google.rpc.Code number")

    def test_members_of_every_documented_form_round_trip_through_set_iam_policy(self):
        # iam.v1.json, Binding.members: every form a policy may hold (issue 14).
        name = f"projects/{PROJECT}/locations/us-central1/services/status-page"
        forms = [
            "user:ada@acme.com",
            "serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com",
            "serviceAccount:acme-prod.svc.id.goog[billing/invoicer]",
            "group:billing@acme.com",
            "domain:acme.com",
            "principal://iam.googleapis.com/locations/global/workforcePools/acme-pool/subject/ada@acme.com",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/billing",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/attribute.team/billing",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/*",
            "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gh/subject/repo:acme/app",
            "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gh/group/ci",
            "allAuthenticatedUsers",
        ]
        policy = self.services().getIamPolicy(resource=name).execute()
        policy["bindings"] = policy.get("bindings", []) + [{"role": "roles/run.developer", "members": forms}]
        self.checked("google.run.services.setIamPolicy",
                     self.services().setIamPolicy(resource=name, body={"policy": policy}),
                     "run.v2", "projects", "locations", "services", "setIamPolicy")
        read = self.checked("google.run.services.getIamPolicy", self.services().getIamPolicy(resource=name),
                            "run.v2", "projects", "locations", "services", "getIamPolicy")
        held = {m for b in read["bindings"] if b["role"] == "roles/run.developer" for m in b["members"]}
        self.assertEqual(held, set(forms))

    def test_consumer_quota_metrics_list_the_enforced_limits_in_the_discovery_shape(self):
        # serviceusage.v1beta1.json services.consumerQuotaMetrics.list: the request quotas the
        # simulator enforces (faults.rateLimits), read per minute per project and region.
        self.sim.faults({"rateLimits": {"cloudRunRead": "200/s", "cloudRunWrite": "180/min"}})
        try:
            quotas = self.serviceusage.services().consumerQuotaMetrics()
            for service, want in (("run.googleapis.com", {"read_regional": "12000", "write_regional": "180"}),
                                  ("iap.googleapis.com", {"read_requests": "-1", "write_requests": "-1"})):
                page = self.checked(f"google.serviceusage.consumerQuotaMetrics.list.{service}",
                                    quotas.list(parent=f"projects/{PROJECT}/services/{service}", view="BASIC"),
                                    "serviceusage.v1beta1", "services", "consumerQuotaMetrics", "list")
                got = {m["metric"].split("/")[-1]: m["consumerQuotaLimits"][0]["quotaBuckets"][0]["effectiveLimit"]
                       for m in page["metrics"]}
                self.assertEqual(got, want, service)
                for m in page["metrics"]:
                    self.assertTrue(m["metric"].startswith(service + "/"))
                    self.assertTrue(m["consumerQuotaLimits"][0]["unit"].startswith("1/min/{project}"))
        finally:
            self.sim.faults({})

    def test_the_iap_agent_is_lazy_a_grant_before_generate_service_identity_is_a_400(self):
        # Google creates service-NUMBER@gcp-sa-iap.iam.gserviceaccount.com lazily; Service Usage
        # services.generateServiceIdentity (serviceusage.v1beta1.json) creates it. acme-staging
        # never used IAP in the demo world.
        number, name = "210987654321", "projects/acme-staging/locations/europe-west1/services/sandbox"
        agent = f"serviceAccount:service-{number}@gcp-sa-iap.iam.gserviceaccount.com"
        policy = self.services().getIamPolicy(resource=name).execute()
        policy["bindings"] = policy.get("bindings", []) + [{"role": "roles/run.invoker", "members": [agent]}]
        e, body = self.failing(self.services().setIamPolicy(resource=name, body={"policy": policy}))
        self.assertEqual(e.status_code, 400)
        self.expect("google.error.400", error_problems(400, body, "INVALID_ARGUMENT"))
        self.assertIn("does not exist", body["error"]["message"])
        op = self.checked("google.serviceusage.generateServiceIdentity",
                          self.serviceusage.services().generateServiceIdentity(
                              parent=f"projects/{number}/services/iap.googleapis.com"),
                          "serviceusage.v1beta1", "services", "generateServiceIdentity")
        self.assertTrue(op.get("done"))
        self.assertEqual(op["response"]["@type"],
                         "type.googleapis.com/google.api.serviceusage.v1beta1.ServiceIdentity")
        self.expect("google.serviceusage.serviceIdentity",
                    check_schema({k: v for k, v in op["response"].items() if k != "@type"},
                                 {"$ref": "ServiceIdentity"}, self.docs["serviceusage.v1beta1"]))
        self.assertEqual("serviceAccount:" + op["response"]["email"], agent)
        self.services().setIamPolicy(resource=name, body={"policy": policy}).execute()

    def test_an_operations_wait_may_answer_before_the_operation_is_done(self):
        # run.v2.json, operations.wait: "It may return the latest state before the specified
        # timeout (including immediately)". The simulator's earlyWait fault does that.
        ops = self.runapi.projects().locations().operations()
        svc = self.services().get(name=SERVICE).execute()
        self.sim.faults({"earlyWait": True})
        try:
            op = self.services().patch(name=SERVICE, updateMask="labels",
                                       body={"labels": dict(svc.get("labels", {}), early="yes")}).execute()
            early = self.checked("google.run.operations.wait", ops.wait(name=op["name"], body={"timeout": "30s"}),
                                 "run.v2", "projects", "locations", "operations", "wait")
        finally:
            self.sim.faults({})
        self.assertFalse(early.get("done", False), "answered at once, not done yet")
        for _ in range(20):
            done = ops.wait(name=op["name"], body={"timeout": "5s"}).execute()
            if done.get("done"):
                break
        self.assertTrue(done.get("done"))

    # ---------------------------------------------------------------- errors

    def test_unknown_service_is_a_404_in_googles_error_shape(self):
        e, body = self.failing(self.services().get(name=f"projects/{PROJECT}/locations/{REGION}/services/nope"))
        self.assertEqual(e.status_code, 404)
        self.expect("google.error.404", error_problems(404, body, "NOT_FOUND"))

    def test_unknown_project_is_a_403_in_googles_error_shape(self):
        e, body = self.failing(self.crm.projects().get(name="projects/not-a-project"))
        self.assertEqual(e.status_code, 403)
        self.expect("google.error.403", error_problems(403, body, "PERMISSION_DENIED"))
        self.assertEqual(e.error_details[0]["reason"], "IAM_PERMISSION_DENIED")

    def test_missing_credentials_are_a_401_unauthenticated_in_googles_error_shape(self):
        resp, content = httplib2.Http(timeout=10).request(f"{self.sim.endpoint}/v2/{SERVICE}")
        self.assertEqual(resp.status, 401)
        self.expect("google.error.401", error_problems(401, json.loads(content), "UNAUTHENTICATED"))

    def test_quota_exceeded_is_a_429_resource_exhausted_with_error_info(self):
        self.sim.faults({"rateLimits": {"cloudRunRead": "1/min"}})
        try:
            status, body = None, None
            for _ in range(3):
                try:
                    self.services().get(name=SERVICE).execute()
                except HttpError as e:
                    status, body = e.status_code, json.loads(e.content)
                    break
        finally:
            self.sim.faults({})
        self.assertEqual(status, 429)
        self.expect("google.error.429", error_problems(429, body, "RESOURCE_EXHAUSTED"))
        self.assertEqual(body["error"]["details"][0]["reason"], "RATE_LIMIT_EXCEEDED")
