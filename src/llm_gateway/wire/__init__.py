"""The wire formats: one package per dialect, each with its types and codecs.

``openai_chat`` (Chat Completions and Embeddings), ``openai_responses``
(the Responses API), ``anthropic`` (Messages) and ``gemini``
(generateContent): how a client's body decodes into canonical types
(``decode``), how a canonical answer encodes for a client (``encode``), how
a canonical request goes to a provider (``to_wire``) and how its answer and
stream come back (``from_wire``, ``stream``). ``answer`` carries a provider's
answer as one typed value, canonical or passed through.

This layer sits above ``types`` and ``errors`` and below both ``api`` and
``providers``, which import it; it imports neither (tests/unit/test_layers.py).
"""
