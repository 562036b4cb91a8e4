"""A polyglot HTTP gateway to RabbitMQ workers."""

from __future__ import annotations

__version__ = "0.1.0"
