"""OpenAI Chat Completions and Embeddings, and any server that speaks them."""
