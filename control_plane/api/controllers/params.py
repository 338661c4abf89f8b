"""What every admin controller reads from a request: the tenant key in the path, the actor."""

from __future__ import annotations

from typing import Annotated

from litestar import Request
from litestar.params import Parameter

KeyParam = Annotated[str, Parameter(max_length=100, description="tenant id or slug")]


def actor(request: Request) -> str:
    """Who is asking, as the admin guard authenticated them (written to the audit log)."""
    return request.state.actor
