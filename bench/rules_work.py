"""What the `rules` policy costs in process: `on_request` of 50 rules (bench/rules.py's) on one
call, against an empty chain's nothing, in microseconds per call.

    python bench/rules_work.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rules import rules_yaml
from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, Principal
from gateway.policies.base import PluginContext
from gateway.policies.rules.engine import Rules
from gateway.policies.rules.schema import RulesOptions


def plugin() -> Rules:
    options = yaml.safe_load(rules_yaml())[0]["with"]
    parsed = RulesOptions.model_validate_json(orjson.dumps(options))
    context = PluginContext(TokenCounter(), frozenset({"fast"}), tiers={"fast": frozenset()})
    return Rules(parsed, context)


async def main(calls: int) -> None:
    rules = plugin()
    principal = Principal("k", "bench", team="bench")
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")]
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    started = time.perf_counter()
    for _ in range(calls):
        call = Call("r", "openai", "chat.completions", "fast", body, False, False,
                    principal=principal, raw_headers=headers)  # fmt: skip
        await rules.on_request(call)
    per_call = (time.perf_counter() - started) / calls * 1e6
    print(f"rules policy, 50 rules (49 evaluated to their third condition): {per_call:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().calls))
