"""Which failed requests the client sends again (slct.client's docs), decided without a
server: the rules are a pure function of the request's kind and the error."""

import unittest

import slct
from slct.client import _ONCE, _SAFE, _UNSAFE, may_retry


def unavailable(code):
    return slct.from_answer(503, code, "m", 1.0)


class RetryRules(unittest.TestCase):
    def test_a_request_that_reached_no_node_goes_to_the_next(self):
        refused = slct.TransportError("refused", connected=False)
        for kind in (_SAFE, _UNSAFE):
            self.assertTrue(may_retry(kind, refused))

    def test_nothing_applied_codes_are_retried_for_any_request(self):
        for code in ("no_leader", "not_leader", "no_quorum", "not_ready", "clock_jump"):
            self.assertTrue(may_retry(_UNSAFE, unavailable(code)), code)
            self.assertFalse(may_retry(_ONCE, unavailable(code)), code)

    def test_a_write_that_may_have_been_applied_is_retried_only_with_a_key(self):
        lost_answer = slct.TransportError("reset", connected=True)
        for error in (unavailable("leader_unreachable"), unavailable("outcome_unknown"),
                      unavailable("shutting_down"), lost_answer):
            self.assertFalse(may_retry(_UNSAFE, error), error)
            self.assertTrue(may_retry(_UNSAFE, error, idempotency_key="k1"), error)
            self.assertTrue(may_retry(_SAFE, error), error)

    def test_answers_other_than_503_are_final(self):
        for status, code in ((409, "lease_lost"), (404, "not_found"), (400, "invalid"),
                             (422, "invalid_update"), (429, "too_many_waiters")):
            error = slct.from_answer(status, code, "m")
            self.assertFalse(may_retry(_SAFE, error, idempotency_key="k"), code)


if __name__ == "__main__":
    unittest.main()
