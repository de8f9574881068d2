"""Where [`ResponseCache`][rtkit.gateway.ResponseCache] keeps its entries.

``base`` is the protocol a backend implements (bytes under a key, with a
time-to-live); ``memory`` and ``redis`` implement it.
"""
