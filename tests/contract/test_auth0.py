"""The simulator's Auth0 Management API, driven by the official auth0-python SDK (6.x) and
checked against the SDK's typed models (auth0/management/types/*.py, generated from Auth0's API
definition). Every call goes through the SDK, which parses the answer into its models; the raw
JSON is then compared key by key with the same models, unknown keys included."""

import json
import os
import typing

import httpx
from auth0.authentication import GetToken
from auth0.authentication.exceptions import Auth0Error
from auth0.authentication.token_verifier import AsymmetricSignatureVerifier
from auth0.management import Auth0
from auth0.management.core.api_error import ApiError
from auth0.management.types import (
    GetGroupMembersResponseContent,
    GroupMember,
    GetRoleResponseContent,
    GetUserResponseContent,
    ListResourceServerOffsetPaginatedResponseContent,
    ListRoleGroupsResponseContent,
    ListRoleUsersPaginatedResponseContent,
    ListOrganizationsPaginatedResponseContent,
    ListRolesOffsetPaginatedResponseContent,
    ListUsersOffsetPaginatedResponseContent,
    SigningKeys,
)

import yaml
from auth0.management.types.oauth_scope import OauthScope

from contract import Contract
from test_google import REFERENCE
from shapes import check_model

DOMAIN = "acme.eu.auth0.com"  # deploy/local/world.yaml
AUDIENCE = f"https://{DOMAIN}/api/v2/"
AUTH0_OPENAPI = os.path.join(os.path.dirname(REFERENCE), "auth0", "management-api-v2.openapi.yaml")

# The error body: auth0-python's error models (types/not_found_error_body.py,
# too_many_requests_error_body.py: message, statusCode, error) plus `errorCode`, which the SDK's
# own response parser reads (auth0/authentication/rest.py). The generated models type statusCode
# as a string; Auth0 sends the HTTP status as a number, which is what is checked here.
ERROR_FIELDS = {"statusCode", "error", "message", "errorCode"}


def error_problems(status, body):
    problems = []
    if not isinstance(body, dict):
        return [f"$: expected an object, got {body!r}"]
    for k in body:
        if k not in ERROR_FIELDS:
            problems.append(f"$.{k}: not a field of Auth0's error body {sorted(ERROR_FIELDS)}")
    if body.get("statusCode") != status:
        problems.append(f"$.statusCode: {body.get('statusCode')!r} is not the HTTP status {status}")
    for k in ("error", "message"):
        if not isinstance(body.get(k), str):
            problems.append(f"$.{k}: expected a string, got {body.get(k)!r}")
    if "errorCode" in body and not isinstance(body["errorCode"], str):
        problems.append(f"$.errorCode: expected a string, got {body['errorCode']!r}")
    return problems


class Auth0Contract(Contract):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.sim.env
        # Client credentials through the SDK's Authentication API client.
        token = GetToken(cls.sim.hostport, env["AUTH0_CLIENT_ID"], env["AUTH0_CLIENT_SECRET"],
                         protocol="http").client_credentials(audience=AUDIENCE)
        cls.token_response = token
        cls.raw = []

        def capture(response):
            response.read()
            cls.raw.append(response)

        cls.http = httpx.Client(event_hooks={"response": [capture]}, timeout=10)
        cls.mgmt = Auth0(base_url=f"{cls.sim.endpoint}/api/v2", token=token["access_token"],
                         httpx_client=cls.http)

    @classmethod
    def tearDownClass(cls):
        cls.http.close()

    def setUp(self):
        self.raw.clear()

    def bodies(self, path_part):
        """Raw JSON bodies of the responses captured so far whose path contains `path_part`."""
        out = [(r.url, json.loads(r.content)) for r in self.raw if path_part in r.url.path]
        self.assertTrue(out, f"no response for {path_part} was captured")
        return out

    def role_id(self, name):
        return next(r.id for r in self.mgmt.roles.list(name_filter=name) if r.name == name)

    # ---------------------------------------------------------------- authentication

    def test_client_credentials_token_matches_the_token_response(self):
        self.assertEqual(set(self.token_response) - {"scope"}, {"access_token", "expires_in", "token_type"})
        self.assertEqual(self.token_response["token_type"], "Bearer")
        self.assertIsInstance(self.token_response["expires_in"], int)

    def test_wrong_client_secret_is_an_oauth_error_the_sdk_reads(self):
        # The Authentication API's error body is {error, error_description}: auth0-python reads
        # `error` as the code and `error_description` as the message (authentication/rest.py).
        with self.assertRaises(Auth0Error) as caught:
            GetToken(self.sim.hostport, self.sim.env["AUTH0_CLIENT_ID"], "wrong-secret",
                     protocol="http").client_credentials(audience=AUDIENCE)
        e = caught.exception
        self.assertEqual((e.status_code, e.error_code), (401, "access_denied"))
        self.assertTrue(e.message)
        r = self.http.post(f"{self.sim.endpoint}/oauth/token",
                           json={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y",
                                 "audience": AUDIENCE})
        self.expect("auth0.oauth.error", sorted(set(r.json()) - {"error", "error_description"}))

    def test_granted_scopes_are_auth0_scopes_and_cover_each_documented_endpoint(self):
        granted = set(self.token_response["scope"].split())
        known = set(typing.get_args(typing.get_args(OauthScope)[0]))  # Union[Literal[...], Any]
        self.expect("auth0.token.scopes.known", sorted(f"{s}: not in auth0-python's OauthScope" for s in granted - known))
        with open(AUTH0_OPENAPI) as f:
            paths = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["paths"]
        problems = []
        # The reads runwarden makes that the reference documents (the group endpoints it predates).
        for path in ("/roles", "/roles/{id}", "/roles/{id}/users", "/users", "/users/{id}",
                     "/resource-servers", "/keys/signing", "/organizations"):
            needed = [s for req in paths[path]["get"]["security"] for s in req.get("oAuth2ClientCredentials", [])]
            if needed and not granted & set(needed):
                problems.append(f"GET {path} needs one of {needed}; the token grants {sorted(granted)}")
        self.expect("auth0.token.scopes.endpoints", problems)

    def test_jwks_verifies_the_tenants_tokens_with_the_sdks_verifier(self):
        # OIDC discovery names the JWKS; auth0-python's AsymmetricSignatureVerifier fetches it,
        # parses each key (JwksFetcher) and checks the RS256 signature of a tenant-signed token.
        discovery = self.http.get(f"{self.sim.endpoint}/.well-known/openid-configuration").json()
        self.assertEqual(discovery["issuer"], f"https://{DOMAIN}/")
        jwks_path = "/" + discovery["jwks_uri"].split("://", 1)[1].split("/", 1)[1]
        payload = AsymmetricSignatureVerifier(f"{self.sim.endpoint}{jwks_path}").verify_signature(
            self.token_response["access_token"])
        self.assertEqual(payload["iss"], f"https://{DOMAIN}/")
        self.assertEqual(payload["aud"], AUDIENCE)
        # JWK members: RFC 7517 section 4 and RFC 7518 section 6.3.1 (RSA).
        jwk_members = {"kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256", "n", "e"}
        jwks = self.http.get(f"{self.sim.endpoint}{jwks_path}").json()
        self.assertEqual(set(jwks), {"keys"})
        self.expect("auth0.jwks.members", [f"$.keys[{i}].{k}: not a JWK member"
                                           for i, key in enumerate(jwks["keys"]) for k in key if k not in jwk_members])

    # ---------------------------------------------------------------- roles

    def test_roles_list_pages_by_offset_and_matches_the_role_models(self):
        roles = list(self.mgmt.roles.list(per_page=2))
        self.assertGreater(len(roles), 2, "the demo world has more roles than one page")
        self.assertEqual(len({r.id for r in roles}), len(roles), "paging repeated a role")
        for url, body in self.bodies("/api/v2/roles"):
            self.expect("auth0.roles.list", check_model(body, ListRolesOffsetPaginatedResponseContent), str(url))

    def test_role_get_matches_get_role_response(self):
        rid = self.role_id("billing-admin")
        self.assertEqual(self.mgmt.roles.get(rid).name, "billing-admin")
        for url, body in self.bodies(f"/api/v2/roles/{rid}"):
            if url.path.endswith(rid):
                self.expect("auth0.roles.get", check_model(body, GetRoleResponseContent), str(url))

    def test_role_users_page_by_checkpoint_and_match_role_user(self):
        rid = self.role_id("billing-oncall")
        users = list(self.mgmt.roles.users.list(rid, take=1))
        self.assertGreater(len(users), 1, "billing-oncall has more than one direct user")
        self.assertEqual(len({u.user_id for u in users}), len(users), "checkpoint paging repeated a user")
        bodies = self.bodies(f"/roles/{rid}/users")
        self.assertGreater(len(bodies), 1, "take=1 must have paged")
        self.assertNotIn("next", bodies[-1][1], "the last page must have no `next`")
        for url, body in bodies:
            self.expect("auth0.roles.users", check_model(body, ListRoleUsersPaginatedResponseContent), str(url))

    def test_role_groups_match_list_role_groups_response(self):
        rid = self.role_id("billing-admin")
        groups = list(self.mgmt.roles.groups.get(rid, take=1))
        self.assertTrue(groups, "billing-admin is held through a group in the demo world")
        for url, body in self.bodies(f"/roles/{rid}/groups"):
            self.expect("auth0.roles.groups", check_model(body, ListRoleGroupsResponseContent), str(url))

    def test_group_members_match_group_member(self):
        rid = self.role_id("billing-admin")
        gid = next(iter(self.mgmt.roles.groups.get(rid))).id
        self.raw.clear()
        members = list(self.mgmt.groups.members.get(gid, take=1))
        self.assertGreater(len(members), 1, "billing-team has more than one member")
        bodies = self.bodies(f"/groups/{gid}/members")
        self.assertGreater(len(bodies), 1, "take=1 must have paged")
        for url, body in bodies:
            # The envelope alone (members emptied): `members` and `next` only.
            self.expect("auth0.groups.members.page",
                        check_model({**body, "members": []}, GetGroupMembersResponseContent), str(url))
            self.expect("auth0.groups.members.item",
                        check_model(body.get("members"), typing.List[GroupMember], "$.members"), str(url))

    # ---------------------------------------------------------------- users

    def test_user_search_matches_user_response_schema(self):
        page = self.mgmt.users.list(q="email_verified:false", search_engine="v3", per_page=50)
        emails = [u.email for u in page]
        self.assertIn("ken@acme.com", emails)
        for url, body in self.bodies("/api/v2/users"):
            self.expect("auth0.users.list", check_model(body, ListUsersOffsetPaginatedResponseContent), str(url))

    def test_user_get_matches_get_user_response(self):
        uid = next(iter(self.mgmt.users.list(q='email:"ada@acme.com"', search_engine="v3"))).user_id
        self.raw.clear()
        user = self.mgmt.users.get(uid)
        self.assertEqual(user.email, "ada@acme.com")
        for url, body in self.bodies("/api/v2/users/"):
            self.expect("auth0.users.get", check_model(body, GetUserResponseContent), str(url))

    # ---------------------------------------------------------------- resource servers, keys

    def test_resource_servers_match_resource_server(self):
        servers = list(self.mgmt.resource_servers.list(per_page=1))
        self.assertGreater(len(servers), 1)
        # The access policies per subject, as the SDK's ResourceServerSubjectTypeAuthorization.
        billing = next(s for s in servers if s.identifier == "https://billing.acme.com")
        self.assertEqual(billing.subject_type_authorization.user.policy, "require_client_grant")
        self.assertEqual(billing.subject_type_authorization.client.policy, "require_client_grant")
        for url, body in self.bodies("/api/v2/resource-servers"):
            self.expect("auth0.resource_servers.list",
                        check_model(body, ListResourceServerOffsetPaginatedResponseContent), str(url))

    def test_signing_keys_match_signing_keys(self):
        keys = self.mgmt.keys.signing.list()
        self.assertTrue(keys)
        for url, body in self.bodies("/api/v2/keys/signing"):
            self.expect("auth0.keys.signing", check_model(body, typing.List[SigningKeys]), str(url))

    def test_organizations_page_by_checkpoint_and_match_organization(self):
        # runwarden reads one small checkpoint page (take) to know whether the tenant has any.
        orgs = list(self.mgmt.organizations.list(take=1))
        self.assertEqual([o.name for o in orgs], ["partner-co"], "the demo world has one organization")
        self.assertEqual(orgs[0].display_name, "Partner Co")
        for url, body in self.bodies("/api/v2/organizations"):
            self.expect("auth0.organizations.list",
                        check_model(body, ListOrganizationsPaginatedResponseContent), str(url))

    # ---------------------------------------------------------------- errors

    def test_unknown_role_is_a_404_in_auth0s_error_shape(self):
        with self.assertRaises(ApiError) as caught:
            self.mgmt.roles.get("rol_doesnotexist")
        self.assertEqual(caught.exception.status_code, 404)
        self.expect("auth0.error.404", error_problems(404, caught.exception.body))

    def test_unknown_user_is_a_404_in_auth0s_error_shape(self):
        with self.assertRaises(ApiError) as caught:
            self.mgmt.users.get("auth0|doesnotexist")
        self.assertEqual(caught.exception.status_code, 404)
        self.expect("auth0.error.404.user", error_problems(404, caught.exception.body))

    def test_rate_limited_call_is_a_429_with_auth0s_rate_limit_headers(self):
        self.sim.faults({"rateLimits": {"auth0": "1/min"}})
        try:
            statuses = []
            for _ in range(3):
                r = self.http.get(f"{self.sim.endpoint}/api/v2/roles",
                                  headers={"authorization": f"Bearer {self.token_response['access_token']}"})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    break
        finally:
            self.sim.faults({})
        self.assertEqual(statuses[-1], 429, f"statuses {statuses}")
        self.expect("auth0.error.429", error_problems(429, r.json()))
        # Auth0's rate-limit headers, as the SDK reads them (auth0/management/core/http_client.py
        # reads x-ratelimit-reset; Auth0's "Rate limit policy" documents all three).
        for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            self.assertRegex(r.headers.get(h, ""), r"^\d+$", h)

    def test_per_page_over_100_is_a_400_in_auth0s_error_shape(self):
        with self.assertRaises(ApiError) as caught:
            list(self.mgmt.roles.list(per_page=101))
        self.assertEqual(caught.exception.status_code, 400)
        self.expect("auth0.error.400", error_problems(400, caught.exception.body))

    def test_missing_token_is_a_401_in_auth0s_error_shape(self):
        r = self.http.get(f"{self.sim.endpoint}/api/v2/roles")
        self.assertEqual(r.status_code, 401)
        self.expect("auth0.error.401", error_problems(401, r.json()))
