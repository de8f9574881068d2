"""A user and an order service, as rtkit MicroServices.

Each registers itself in its registry on startup and deregisters on shutdown
(``UserService.from_url(url)`` opens that registry on ``url``); errors (unknown
ids, invalid bodies) come back as JSON with the right status.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtkit.errors import NotFound
from rtkit.microservice import MicroService
from rtkit.registry import ServiceRegistry


class NewUser(BaseModel):
    """The body of ``POST /users``."""

    name: str = Field(min_length=1, max_length=100)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)


class NewOrder(BaseModel):
    """The body of ``POST /orders``."""

    userId: int = Field(gt=0)
    total: float = Field(ge=0)


class UserService(MicroService):
    """``GET /users``, ``GET /users/{id}``, ``POST /users``."""

    name = "user-service"

    def __init__(self, registry: ServiceRegistry | None = None, *, port: int = 0) -> None:
        super().__init__(registry=registry, port=port, meta={"version": "1.0"})
        self.users = [
            {"id": 1, "name": "Alice", "email": "alice@example.com"},
            {"id": 2, "name": "Bob", "email": "bob@example.com"},
        ]
        self.ids = itertools.count(3)
        self.add_route("/users", self.list_users)
        self.add_route("/users/{id:int}", self.get_user)
        self.add_route("/users", self.create_user, methods=["POST"])

    async def list_users(self, request: Request) -> Response:
        return JSONResponse(self.users, headers={"Cache-Control": "max-age=30"})

    async def get_user(self, request: Request) -> Response:
        user_id = request.path_params["id"]
        for user in self.users:
            if user["id"] == user_id:
                return JSONResponse(user)
        raise NotFound(f"user {user_id} not found")

    async def create_user(self, request: Request) -> Response:
        new = await self.parse(request, NewUser)
        user = {
            "id": next(self.ids),
            **new.model_dump(),
            "createdAt": datetime.now(UTC).isoformat(),
        }
        self.users.append(user)
        return JSONResponse(user, status_code=201)


class OrderService(MicroService):
    """``GET /orders``, ``GET /orders/{id}``, ``POST /orders``."""

    name = "order-service"

    def __init__(self, registry: ServiceRegistry | None = None, *, port: int = 0) -> None:
        super().__init__(registry=registry, port=port, meta={"version": "1.0"})
        self.orders = [
            {"id": 1, "userId": 1, "total": 100, "status": "pending"},
            {"id": 2, "userId": 2, "total": 200, "status": "completed"},
        ]
        self.ids = itertools.count(3)
        self.add_route("/orders", self.list_orders)
        self.add_route("/orders/{id:int}", self.get_order)
        self.add_route("/orders", self.create_order, methods=["POST"])

    async def list_orders(self, request: Request) -> Response:
        return JSONResponse(self.orders, headers={"Cache-Control": "no-store"})

    async def get_order(self, request: Request) -> Response:
        order_id = request.path_params["id"]
        for order in self.orders:
            if order["id"] == order_id:
                return JSONResponse(order)
        raise NotFound(f"order {order_id} not found")

    async def create_order(self, request: Request) -> Response:
        new = await self.parse(request, NewOrder)
        order = {
            "id": next(self.ids),
            **new.model_dump(),
            "status": "pending",
            "createdAt": datetime.now(UTC).isoformat(),
        }
        self.orders.append(order)
        return JSONResponse(order, status_code=201)
