"""What every component shares: life cycle, URLs, Redis, validation, topics, leases.

Private: components import from here; users import from ``rtkit`` and backend
authors from ``rtkit.backends``. Nothing here imports a component.
"""
