"""Shared test base: the simulator for the suite, and `expect`, which applies known_gaps.py."""

import unittest

from known_gaps import KNOWN_GAPS
import sim as simmod

SEEN_GAPS = set()


class Contract(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = simmod.sim()

    def expect(self, check, problems, context=""):
        """Asserts `problems` is empty, or, for a check listed in known_gaps.py, that it is not."""
        where = f" ({context})" if context else ""
        if check in KNOWN_GAPS:
            SEEN_GAPS.add(check)
            issue, reason = KNOWN_GAPS[check]
            self.assertTrue(
                problems,
                f"unexpected pass: contract check {check!r}{where} is listed in known_gaps.py "
                f"(issue {issue}) but the simulator now matches; remove the entry",
            )
        elif problems:
            self.fail(f"contract check {check!r}{where} failed:\n  " + "\n  ".join(problems))
