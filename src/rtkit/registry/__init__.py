"""Service registry: register instances with a TTL and heartbeat, discover and pick them.

```python
registry = ServiceRegistry.from_url("redis://localhost:6379/0")
instance_id = await registry.register("user-service", host="10.0.0.5", port=8001)
instance = await registry.get_service("user-service", strategy="round_robin")
```
"""

from __future__ import annotations

from ._models import ServiceChange, ServiceInstance, Strategy
from ._registry import ServiceRegistry

__all__ = ["ServiceChange", "ServiceInstance", "ServiceRegistry", "Strategy"]
