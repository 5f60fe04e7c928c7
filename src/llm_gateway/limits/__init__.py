"""Rate limits (GCRA), in process or on Redis."""

from llm_gateway.limits.limiter import Admission, Limiter

__all__ = ["Admission", "Limiter"]
