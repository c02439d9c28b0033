"""What a backend adds to a prompt that Tollgate's own count cannot see: its chat template
(Llama 3.1's default system preamble alone is ~25 tokens), its own tokenizer's differences.

A reservation that undercounts the prompt lets racing calls pass a budget together by the sum
of their shortfalls, so the overshoot would grow with the number of calls. Each target's
overhead is learnt from the usage it reports (reported prompt minus what was reserved for it),
conservatively: a new larger figure is taken at once, a smaller one only slowly, and until a
target has reported anything a prior (`limits.prompt_overhead_tokens`) is reserved. Lives in
Services: it survives config reloads.
"""

from __future__ import annotations

from gateway.call import Target

_DECAY = 32  # a smaller observation closes 1/32 of the gap


class PromptOverhead:
    def __init__(self) -> None:
        self._learnt: dict[tuple[str, str], int] = {}

    def tokens(self, target: Target, prior: int) -> int:
        """Extra prompt tokens to reserve for a call to `target` (`prior` until it reports)."""
        return self._learnt.get((target.backend, target.model), prior)

    def observe(self, target: Target, reserved_prompt: int, reported_prompt: int) -> None:
        """One call's reported prompt against what was reserved for its prompt."""
        extra = max(reported_prompt - reserved_prompt, 0)
        key = (target.backend, target.model)
        old = self._learnt.get(key)
        if old is None or extra >= old:
            self._learnt[key] = extra
        else:
            self._learnt[key] = old - max(1, (old - extra) // _DECAY)
