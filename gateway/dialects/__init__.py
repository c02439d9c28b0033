"""Translation between the OpenAI and Anthropic dialects: requests, responses, streams, errors."""
