"""The policy plugin chain: ordered plugins that may deny, answer or route each call."""
