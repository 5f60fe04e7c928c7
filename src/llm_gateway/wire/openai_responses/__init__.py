"""OpenAI Responses API: client decoding, response objects and their event streams."""
