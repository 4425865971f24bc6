"""The one list of contract checks the simulator is KNOWN to fail, because fixing the simulator
would change runwarden's own behaviour (the product reads the wrong shape today).

Each entry maps a check id (the first argument of `Contract.expect` in the test modules) to the
issue that will fix the product and the reason. A listed check still runs and must still FAIL:
if the simulator starts matching the official shape, the test fails with "unexpected pass" so the
entry is removed here in the same change. Whoever fixes the product empties this list.
"""

KNOWN_GAPS = {
    "auth0.groups.members.item": (
        13,
        "GET /api/v2/groups/{id}/members items are GroupMember {id, member_type, type, "
        "connection_id, created_at} in auth0-python 6.x (types/group_member.py); the simulator "
        "serves the role-user shape {user_id, email, picture, name} because runwarden reads "
        "members as user records (issue 13 item 1).",
    ),
}
