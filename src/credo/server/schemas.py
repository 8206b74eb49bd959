"""Request bodies, checked field by field so a malformed request is a 400 with a reason, never an engine error."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TEXT = 200_000  # characters in one message or prompt; the body-size limit usually bites first
MAX_STOPS = 4


class _Body(BaseModel):
    # Clients such as the official openai package send fields this server does not use (user, logprobs=None, ...).
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class Message(_Body):
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @field_validator("content")
    @classmethod
    def _not_too_long(cls, v: Any) -> Any:
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise ValueError(f"message content is longer than {MAX_TEXT} characters")
        return v


class _Sampling(_Body):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    stream_options: Optional[dict[str, Any]] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOPS or any(not s or len(s) > 64 for s in stops):
            raise ValueError(f"stop takes at most {MAX_STOPS} non-empty strings of up to 64 characters")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=512)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str = Field(max_length=MAX_TEXT)


class IdentityRequest(_Body):
    name: str = Field(min_length=1, max_length=64)
    manifesto: str = Field(min_length=1, max_length=70_000)
    kind: str = Field("prompt", min_length=1, max_length=32)
    settings: dict[str, Union[str, int, float, bool]] = Field(default_factory=dict, max_length=32)
    overwrite: bool = False
    wait: bool = False
