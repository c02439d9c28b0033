"""Where a finished call's record goes, and what is worked out on the way: its usage made
plausible, its money priced (shadow rules' would-be cost included), a prefix prediction
checked. The durable journal first (synchronously), then the sinks' queue."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from gateway.accounting.pricing import usd
from gateway.accounting.request_size import output_cap
from gateway.accounting.tokens import TokenCounter, prompt_tokens
from gateway.accounting.usage_guard import plausible
from gateway.call import NO_MONEY, Call, CallRecord, Decision, Outcome, Usage
from gateway.routing.prefix import PrefixPrediction
from gateway.runtime import Runtime
from gateway.sinks.base import DurableSink
from gateway.sinks.fanout import SinkFanout

log = logging.getLogger("gateway.pipeline")


@dataclass(slots=True)
class Recorder:
    """Where a finished call's record goes: the durable journal first (synchronously, before
    the response completes), then the sinks' queue."""

    sinks: SinkFanout
    tokens: TokenCounter
    journal: DurableSink | None = None

    def record(self, call: Call, outcome: Outcome, runtime: Runtime) -> None:
        """Total: whatever went wrong before, the call gets exactly one record."""
        outcome.completed_at = time.time()
        try:
            self._account(call, outcome, runtime)
        except Exception:  # never let a bug in accounting leave a call unrecorded
            log.exception(
                "accounting for call %s failed; recorded without its cost", call.request_id
            )
            outcome.money = NO_MONEY
            call.decide(Decision("accounting", "note", "cost could not be computed"))
        record = CallRecord.of(call, outcome)
        if self.journal is not None:
            self.journal.append(record)
        self.sinks.submit(record)

    def _account(self, call: Call, outcome: Outcome, runtime: Runtime) -> None:
        if outcome.usage is None and outcome.disconnected and outcome.target is not None:
            # Abandoned before any usage came back: the prompt was (at least) processed.
            count = prompt_tokens(call.endpoint, call.body, self.tokens)
            outcome.usage = Usage(input_tokens=count, estimated=True)
        if outcome.usage is not None:
            usage = plausible(outcome.usage, output_cap(call.endpoint, call.body))
            if usage.anomaly is not None:
                call.decide(Decision("upstream", "note", f"usage anomaly: {usage.anomaly}"))
            outcome.usage = usage
        outcome.money = runtime.costing.money(call.model, outcome)
        prefix, target = call.prefix, outcome.target
        if (
            isinstance(prefix, PrefixPrediction)
            and target is not None
            and outcome.usage is not None
            and prefix.observe((target.backend, target.model), outcome.usage)
        ):
            outcome.prefix_predicted = prefix.predicted_tokens
        if call.shadows and outcome.usage is not None and outcome.target is not None:
            self._price_shadows(call, outcome, runtime)

    @staticmethod
    def _price_shadows(call: Call, outcome: Outcome, runtime: Runtime) -> None:
        """What each shadow rule's route would have cost with this call's usage."""
        assert outcome.usage is not None
        shadows = []
        for rule, intent in call.shadows or ():
            step = runtime.router.steps(call.model, intent)[0]
            targets = tuple(r.target for r in step.tier.replicas)
            would = runtime.costing.would_cost(targets, outcome.usage)
            saved = outcome.money.cost - would
            shadows.append((rule, saved))
            call.decide(Decision(
                "rules", "shadow",
                f"rule '{rule}' would have served from tier {step.tier.name} of {step.alias}: "
                f"${usd(would)} instead of ${usd(outcome.money.cost)} (would save ${usd(saved)})",
                enforced=False,
            ))  # fmt: skip
        outcome.money = dataclasses.replace(outcome.money, shadows=tuple(shadows))
