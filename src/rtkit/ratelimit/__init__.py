"""Rate limiting: GCRA token bucket, exact sliding window and sliding window counter.

```python
from rtkit import RateLimiter

limiter = RateLimiter.from_url("redis://localhost:6379/0")
decision = await limiter.hit(f"ip:{client_ip}", "100/minute", "1000/hour")
if not decision.allowed:
    ...  # answer 429 with decision.headers()
```
"""

from __future__ import annotations

from ._limiter import FailurePolicy, RateLimiter
from ._limits import Algorithm, Decision, Limit, parse_limit

__all__ = ["Algorithm", "Decision", "FailurePolicy", "Limit", "RateLimiter", "parse_limit"]
