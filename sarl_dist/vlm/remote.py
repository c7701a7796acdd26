"""Remote VLM backends: Gemini through google-genai, any OpenAI-compatible chat endpoint.

Both go through a maintained client library, never hand-written HTTP. Each HTTP attempt
has `vlm.timeout`; the library retries 408, 429, 5xx and timeouts with exponential
backoff up to `vlm.attempts`; the whole query, retries included, is cut at
`vlm.deadline`. Every failure ends as a ProposalError with a kind the VLMService meters;
a timeout or a lost connection names the endpoint, the timeout and the attempts made.
Every HTTP attempt, retries included, is counted by its status (or `timeout`,
`connection`) at the transport, under the libraries' retry loops (`http_attempts`).
Keys come from the environment only and are held in memory, never logged or written.
This module is imported only when a remote backend is configured.
"""

from __future__ import annotations

import asyncio
import base64
import os
from abc import ABC, abstractmethod
from collections import Counter
from contextvars import ContextVar
from typing import Any

import httpx2
import openai
from google import genai
from google.genai import errors, types

from sarl_dist.config import ConfigError, VLMConfig
from sarl_dist.vlm.base import Answer, ProposalError, ProposalRequest
from sarl_dist.vlm.prompting import SYSTEM_INSTRUCTION, parse_answer, schema, user_parts

GEMINI_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# Gemini's finish reasons for an answer withheld by a filter.
_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


def gemini_key() -> str:
    for name in GEMINI_KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    raise ConfigError(
        "vlm.backend=gemini needs an API key in GEMINI_API_KEY or GOOGLE_API_KEY "
        "(read from the environment only, never from a config)"
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# The HTTP attempts of the query in progress (each query runs in its own asyncio context, so
# concurrent queries count apart).
_QUERY_ATTEMPTS: ContextVar[list[int]] = ContextVar("query_attempts")


class MeteredTransport(httpx2.AsyncBaseTransport):
    """Counts every HTTP attempt the SDK makes, by status or failure, and remembers where
    the last one went; the SDK's own retries happen above it."""

    def __init__(self, counts: Counter[str]) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.counts = counts
        self.last_url = ""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.last_url = str(request.url.copy_with(query=None))  # a key in the query stays out
        _QUERY_ATTEMPTS.get([0])[0] += 1
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TimeoutException:
            self.counts["timeout"] += 1
            raise
        except httpx2.TransportError:
            self.counts["connection"] += 1
            raise
        self.counts[str(response.status_code)] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class HttpProposer(ABC):
    """What the remote backends share: one SDK client per event loop (pooled connections
    belong to the loop that opened them), the overall deadline, failures as ProposalError,
    HTTP attempts counted by status."""

    def __init__(self, vcfg: VLMConfig) -> None:
        self.vcfg = vcfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self.http_attempts: Counter[str] = Counter()
        self.http_retries = 0  # attempts beyond each query's first
        self._transport: MeteredTransport | None = None

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where queries go, for messages (the last URL used, else the configured base)."""

    @abstractmethod
    def _connect(self) -> Any:
        """A client of the SDK for the running loop."""

    @abstractmethod
    async def _send(self, client: Any, request: ProposalRequest) -> tuple[str | None, tuple]:
        """(the model's text, (tokens in, tokens out)); raises on transport failures."""

    @abstractmethod
    def _kind(self, exc: Exception) -> str:
        """The kind a failure is metered under."""

    def _sdk(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._transport = MeteredTransport(self.http_attempts)
            self._loop, self._client = loop, self._connect()
        return self._client

    async def ask(self, request: ProposalRequest) -> Answer:
        attempts = [0]
        _QUERY_ATTEMPTS.set(attempts)  # this query's own context (a task of its own)
        try:
            text, tokens = await asyncio.wait_for(
                self._send(self._sdk(), request), self.vcfg.deadline
            )
        except TimeoutError:
            raise ProposalError(
                "deadline",
                f"no answer from {self.endpoint} within vlm.deadline={self.vcfg.deadline:g}s "
                f"({attempts[0]} HTTP attempts)",
            ) from None
        except ProposalError:
            raise
        except Exception as exc:
            kind, v = self._kind(exc), self.vcfg
            if kind == "timeout":
                what = f"no answer within vlm.timeout={v.timeout:g}s"
            elif kind == "connection":
                what = f"could not connect ({_short(exc)})"
            else:
                raise ProposalError(kind, f"{self.endpoint}: {_short(exc)}") from None
            raise ProposalError(
                kind, f"{self.endpoint}: {what}, {attempts[0]} of vlm.attempts={v.attempts} tried"
            ) from None
        finally:
            self.http_retries += max(0, attempts[0] - 1)
        return parse_answer(text, request, tokens)


class GeminiProposer(HttpProposer):
    """Gemini's generateContent with an image part, a system instruction and a JSON schema."""

    def __init__(self, vcfg: VLMConfig) -> None:
        super().__init__(vcfg)
        self._key = gemini_key()

    def _connect(self) -> Any:
        v, g = self.vcfg, self.vcfg.gemini
        options = types.HttpOptions(
            base_url=g.base_url,
            api_version=g.api_version,
            timeout=round(v.timeout * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(
                attempts=v.attempts,
                initial_delay=v.retry_delay,
                max_delay=v.retry_max_delay,
                exp_base=2.0,
                jitter=v.retry_delay,
                http_status_codes=list(RETRY_STATUS),
            ),
            # httpx2 rather than aiohttp: the SDK retries httpx timeouts but not aiohttp's.
            async_client_args={"transport": self._transport},
        )
        return genai.Client(api_key=self._key, http_options=options)

    @property
    def endpoint(self) -> str:
        last = self._transport.last_url if self._transport else ""
        return last or (self.vcfg.gemini.base_url or "https://generativelanguage.googleapis.com")

    async def _send(self, client: Any, request: ProposalRequest) -> tuple[str | None, tuple]:
        g = self.vcfg.gemini
        parts = [
            types.Part.from_text(text=p)
            if isinstance(p, str)
            else types.Part.from_bytes(data=p, mime_type="image/png")
            for p in user_parts(request)
        ]
        config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            response_mime_type="application/json",
            response_json_schema=schema(request).model_json_schema(),
            temperature=g.temperature,
            candidate_count=1,
            thinking_config=types.ThinkingConfig(thinking_level=g.thinking_level.upper())
            if g.thinking_level
            else None,
        )
        response = await client.aio.models.generate_content(
            model=g.model, contents=[types.Content(role="user", parts=parts)], config=config
        )
        usage = response.usage_metadata
        tokens = (
            (
                (usage.prompt_token_count or 0),
                (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0),
            )
            if usage
            else (0, 0)
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            raise ProposalError("safety", f"prompt blocked ({feedback.block_reason})", tokens)
        if not response.candidates:
            raise ProposalError("empty", "no candidate in the answer", tokens)
        candidate = response.candidates[0]
        reason = str(getattr(candidate.finish_reason, "value", candidate.finish_reason))
        if reason in _BLOCKED:
            raise ProposalError("safety", f"answer withheld (finishReason {reason})", tokens)
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        return "".join(p.text for p in parts if p.text and not p.thought), tokens

    def _kind(self, exc: Exception) -> str:
        if isinstance(exc, errors.APIError):
            return f"http_{exc.code}"
        if isinstance(exc, httpx2.TimeoutException):
            return "timeout"
        if isinstance(exc, httpx2.TransportError):
            return "connection"
        return "other"


class OpenAIProposer(HttpProposer):
    """An OpenAI-compatible /chat/completions endpoint with a json_schema response format.

    Retries are the openai client's own (408, 409, 429, 5xx, timeouts; backoff from 0.5 s,
    honouring Retry-After), `vlm.attempts` of them.
    """

    def __init__(self, vcfg: VLMConfig) -> None:
        super().__init__(vcfg)
        name = vcfg.openai.api_key_env
        if name is not None and not os.environ.get(name):
            raise ConfigError(f"vlm.openai.api_key_env: environment variable {name} is not set")
        # Local servers (vLLM, Ollama) ignore the key, but the client insists on one.
        self._key = os.environ[name] if name is not None else "no-key"

    def _connect(self) -> Any:
        return openai.AsyncOpenAI(
            api_key=self._key,
            base_url=self.vcfg.openai.base_url,
            timeout=self.vcfg.timeout,
            max_retries=self.vcfg.attempts - 1,
            http_client=openai.DefaultAsyncHttpxClient(transport=self._transport),
        )

    @property
    def endpoint(self) -> str:
        last = self._transport.last_url if self._transport else ""
        return last or self.vcfg.openai.base_url

    async def _send(self, client: Any, request: ProposalRequest) -> tuple[str | None, tuple]:
        o = self.vcfg.openai
        content = [
            {"type": "text", "text": p}
            if isinstance(p, str)
            else {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64," + base64.b64encode(p).decode()},
            }
            for p in user_parts(request)
        ]
        answer = schema(request)
        options: dict[str, Any] = {} if o.temperature is None else {"temperature": o.temperature}
        response = await client.chat.completions.create(
            model=o.model,
            messages=[
                {"role": "system", "content": SYSTEM_INSTRUCTION},
                {"role": "user", "content": content},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": answer.__name__,
                    "schema": answer.model_json_schema(),
                    "strict": True,
                },
            },
            **options,
        )
        usage = response.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        if not response.choices:
            raise ProposalError("empty", "no choice in the answer", tokens)
        choice = response.choices[0]
        if choice.finish_reason == "content_filter":
            raise ProposalError("safety", "answer withheld (finish_reason content_filter)", tokens)
        return choice.message.content, tokens

    def _kind(self, exc: Exception) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return "timeout"
        if isinstance(exc, openai.APIConnectionError):
            return "connection"
        if isinstance(exc, openai.APIStatusError):
            return f"http_{exc.status_code}"
        return "other"
