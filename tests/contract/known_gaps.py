"""The one list of contract checks the simulator is KNOWN to fail, because fixing the simulator
would change runwarden's own behaviour (the product reads the wrong shape today).

Each entry maps a check id (the first argument of `Contract.expect` in the test modules) to the
issue that will fix the product and the reason. A listed check still runs and must still FAIL:
if the simulator starts matching the official shape, the test fails with "unexpected pass" so the
entry is removed here in the same change. Whoever fixes the product empties this list.
"""

KNOWN_GAPS = {}
