"""Anthropic Messages: client decoding and encoding, upstream translation and stream decoding."""
