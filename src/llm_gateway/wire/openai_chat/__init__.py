"""OpenAI Chat Completions and Embeddings: client decoding and encoding, upstream translation."""
