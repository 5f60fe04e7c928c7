"""Who is calling: API keys, the master key, gateway JWTs and identity
providers' JWTs, all resolved to a ``Principal``."""
