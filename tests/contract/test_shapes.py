"""The checkers themselves: each kind of mismatch is reported, so a passing contract check means
something. (Plain values, no simulator.)"""

import typing
import unittest

from auth0.management.types import GroupMember, ListRoleUsersPaginatedResponseContent, SigningKeys

from contract import Contract
from known_gaps import KNOWN_GAPS
from shapes import check_model, check_schema

DOC = {"schemas": {
    "Policy": {"id": "Policy", "type": "object", "properties": {
        "version": {"type": "integer", "format": "int32"},
        "etag": {"type": "string", "format": "byte"},
        "bindings": {"type": "array", "items": {"$ref": "Binding"}}}},
    "Binding": {"id": "Binding", "type": "object", "properties": {
        "role": {"type": "string"},
        "members": {"type": "array", "items": {"type": "string"}}}},
    "Service": {"id": "Service", "type": "object", "properties": {
        "generation": {"type": "string", "format": "int64"},
        "ingress": {"type": "string", "enum": ["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY"]},
        "createTime": {"type": "string", "format": "google-datetime"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
}}


class ModelChecks(unittest.TestCase):
    def test_a_matching_page_has_no_problems(self):
        body = {"users": [{"user_id": "auth0|1", "email": "a@b.c", "name": "A", "picture": "p"}], "next": "x"}
        self.assertEqual(check_model(body, ListRoleUsersPaginatedResponseContent), [])

    def test_an_unknown_field_in_a_nested_model_is_reported_with_its_path(self):
        body = {"users": [{"user_id": "auth0|1", "email_verified": True}]}
        problems = check_model(body, ListRoleUsersPaginatedResponseContent)
        self.assertEqual(len(problems), 1)
        self.assertIn("$.users[0].email_verified: not a field of RoleUser", problems[0])

    def test_a_wrong_type_and_an_unknown_enum_value_are_reported(self):
        self.assertTrue(check_model({"id": 7}, GroupMember))
        self.assertTrue(check_model({"id": "u", "member_type": "robot"}, GroupMember))
        self.assertTrue(check_model({"created_at": "yesterday"}, GroupMember))

    def test_a_missing_required_field_is_reported(self):
        problems = check_model([{"kid": "k"}], typing.List[SigningKeys])
        self.assertTrue(any("missing required field cert" in p for p in problems), problems)


class SchemaChecks(unittest.TestCase):
    def test_a_matching_policy_has_no_problems(self):
        body = {"version": 3, "etag": "BwXhq+Y=", "bindings": [{"role": "roles/run.invoker", "members": ["user:a@b.c"]}]}
        self.assertEqual(check_schema(body, {"$ref": "Policy"}, DOC), [])

    def test_an_unknown_property_in_a_nested_schema_is_reported_with_its_path(self):
        body = {"bindings": [{"role": "r", "members": [], "members_count": 0}]}
        problems = check_schema(body, {"$ref": "Policy"}, DOC)
        self.assertEqual(len(problems), 1)
        self.assertIn("$.bindings[0].members_count: not a property of Binding", problems[0])

    def test_int64_must_be_a_string_and_enums_and_timestamps_are_checked(self):
        self.assertTrue(check_schema({"generation": 3}, {"$ref": "Service"}, DOC))
        self.assertEqual(check_schema({"generation": "3"}, {"$ref": "Service"}, DOC), [])
        self.assertTrue(check_schema({"ingress": "INGRESS_TRAFFIC_NONE"}, {"$ref": "Service"}, DOC))
        self.assertTrue(check_schema({"createTime": "2024-01-01"}, {"$ref": "Service"}, DOC))
        self.assertTrue(check_schema({"etag": "not base64!"}, {"$ref": "Policy"}, DOC))

    def test_additional_properties_are_checked_against_their_schema(self):
        self.assertEqual(check_schema({"labels": {"team": "billing"}}, {"$ref": "Service"}, DOC), [])
        self.assertTrue(check_schema({"labels": {"team": 1}}, {"$ref": "Service"}, DOC))


class KnownGaps(unittest.TestCase):
    expect = Contract.expect

    def test_a_listed_gap_that_starts_passing_fails_as_an_unexpected_pass(self):
        for check in KNOWN_GAPS:
            with self.assertRaisesRegex(AssertionError, "unexpected pass"):
                self.expect(check, [])

    def test_a_listed_gap_that_still_fails_passes_and_an_unlisted_failure_fails(self):
        for check in KNOWN_GAPS:
            self.expect(check, ["$.x: not a field"])
        with self.assertRaisesRegex(AssertionError, "contract check 'not.listed' failed"):
            self.expect("not.listed", ["$.x: not a field"])
        self.expect("not.listed", [])
