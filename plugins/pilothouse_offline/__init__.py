"""The offline model provider: deterministic, no key, no network.

``offline`` (or ``offline:default``) answers from what is in its context
window: the instructions, the task, the previous persona's output, fenced
retrieved passages, facts remembered about the run's subject and tool results.
When a tool fits the request it calls it first. Token counts are its own
(about four characters a token). It exists so that demos and tests exercise the
real paths of the engine; every model call it answers is labelled ``offline``
in the log.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel, Field

import pilothouse
from pilothouse import Model, ModelProvider, ModelRequest, ModelResponse, Usage, hookimpl

from .compose import answer, choose_tool_call


class OfflineModel(Model):
    """A deterministic stand-in for a chat model."""

    provider = "offline"
    offline = True

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer from the request alone: same request, same reply.

        With a delay (``[plugins.offline] delay_ms``) the text is streamed over it in a few
        pieces, as a real server would, so the monitor has something to show live.
        """
        call = choose_tool_call(request)
        text = None if call else answer(request)
        if self.delay_s:
            await self._stream(text or "")
        out_tokens = pilothouse.estimate_tokens(text or (call.arguments if call else ""))
        in_tokens = pilothouse.estimate_request_tokens(request)
        return ModelResponse(
            text=text,
            tool_calls=[call] if call else [],
            usage=Usage(input_tokens=in_tokens, output_tokens=out_tokens),
            cost_usd=0.0,
            finish_reason="tool_calls" if call else "stop",
        )

    async def _stream(self, text: str, pieces: int = 8) -> None:
        words = text.split(" ")
        size = max(1, -(-len(words) // pieces))
        chunks = [" ".join(words[i : i + size]) + " " for i in range(0, len(words), size)]
        for chunk in chunks or [""]:
            await anyio.sleep(self.delay_s / max(1, len(chunks)))
            pilothouse.emit_delta(chunk)

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Offline calls cost nothing."""
        return 0.0


class OfflineProvider(ModelProvider):
    """Provides ``offline:<any name>``; the name only labels the calls."""

    name = "offline"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def model(self, name: str) -> Model:
        """Every name is valid: the offline model has one behaviour."""
        return OfflineModel(name, self.delay_s)

    def default_model(self) -> str:
        """``offline`` alone means ``offline:default``."""
        return "default"


class OfflineSettings(BaseModel):
    """``[plugins.offline]``: the offline model's settings."""

    model_config = {"extra": "forbid"}

    #: a delay added to every call, for demos (the text streams over it)
    delay_ms: float = Field(default=0.0, ge=0)


@hookimpl
def register_settings(register):
    """The offline model's section, ``[plugins.offline]``."""
    register("offline", OfflineSettings)


@hookimpl
def register_models(register, settings):
    """Register the offline provider, with the configured artificial delay."""
    register(OfflineProvider(delay_s=settings.section("offline").delay_ms / 1000))
