"""Settings for tests that measure what a strategy generates (how often each kind appears, how many
generated specs compile) instead of searching for a bug.

Hypothesis's own generation is tuned to find bugs, and two of its habits make it a poor ruler:
- it builds examples by mutating earlier ones, so a run holds long streaks of near-identical
  documents (the same stage kind five or six times in a row);
- now and then it draws a constant collected from the source of every project module imported so
  far (hypothesis.internal.conjecture.providers._get_local_constants). Which modules those are
  depends on the tests that ran before in the same process, and one constant more shifts the whole
  random stream, so even a derandomized run differs from one test order to another. That is why
  `pytest tests/properties` never generated flow_grpo or adversarial_distill while the coverage test
  passed alone and in the full run.

MEASURE draws every example afresh from the derandomized random stream, without those constants:
the same examples in any process whatever ran before, and independent ones, so counts reflect the
strategy's own distribution.
"""
from hypothesis import settings
from hypothesis.internal.conjecture.providers import AVAILABLE_PROVIDERS, HypothesisProvider

BACKEND = "flowspec-measure"

# The override below relies on this hook; fail loudly if a Hypothesis release renames it.
assert callable(getattr(HypothesisProvider, "_maybe_draw_constant", None)), "Hypothesis changed: update measuring.py"


class _WithoutConstants(HypothesisProvider):
    """Hypothesis's provider, minus the constants it collects from imported modules."""

    def _maybe_draw_constant(self, *args, **kwargs):
        return None


AVAILABLE_PROVIDERS[BACKEND] = _WithoutConstants

MEASURE = settings(derandomize=True, database=None, backend=BACKEND)
