"""kling_async: an asyncio-first concurrent batch client for Kling multi-image generation."""

__all__: list[str] = []
