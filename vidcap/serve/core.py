"""The serving core both servers share: decode → validate → batch → predict → split back.

``ServingCore.decode`` turns one request's image bytes and setting fields into a
``CaptionRequest`` or raises ``BadRequest`` (4xx): every check, the prompt's length in
the model's own tokens included, happens here, before the request joins a batch.
``ServingCore.run`` captions a batch of valid requests: grouped by generation settings,
flattened, captioned ``max_batch`` frames per model call, split back per request in
order. When a model call fails, each request of that group is retried alone, so only
the request that really breaks the model gets an error (500) and its batch-mates get
their captions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np

from vidcap.alone import each_alone
from vidcap.errors import BadRequest
from vidcap.serve.config import ServeConfig
from vidcap.serve.turns import TurnSemaphore
from vidcap.settings import GenerationSettings
from vidcap.wire import CaptionRequest, build_request, settings_to_fields

log = logging.getLogger(__name__)


class CaptionerLike(Protocol):
    input_size: tuple[int, int]

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]: ...


class ModelFailure(Exception):
    """The model raised on this request even when it ran alone."""

    status = 500


@dataclass(frozen=True)
class Outcome:
    """What one request gets: captions, or an error with its HTTP status."""

    captions: tuple[str, ...] = ()
    error: BadRequest | ModelFailure | None = None


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens one generate() call may use: prompt + query tokens + new tokens.

    ``limit`` is the language model's ``max_position_embeddings`` (or the tokenizer's
    ``model_max_length``); ``None`` when the model states none.
    """

    limit: int | None
    query_tokens: int = 0
    tokenizer: object = None

    @classmethod
    def of(cls, captioner: object) -> TokenBudget:
        processor = getattr(captioner, "processor", None)
        model = getattr(captioner, "model", None)
        tokenizer = getattr(processor, "tokenizer", None)
        config = getattr(model, "config", None)
        text_config = getattr(config, "text_config", None)
        limit = getattr(text_config, "max_position_embeddings", None)
        if limit is None and tokenizer is not None:
            length = getattr(tokenizer, "model_max_length", None)
            limit = length if isinstance(length, int) and length < 1_000_000 else None
        query = getattr(config, "num_query_tokens", 0) or 0
        return cls(limit=limit, query_tokens=int(query), tokenizer=tokenizer)

    def check(self, settings: GenerationSettings) -> None:
        if self.limit is None:
            return
        prompt_tokens = 1  # the start token of an empty prompt
        if settings.prompt and self.tokenizer is not None:
            prompt_tokens = len(self.tokenizer(settings.prompt)["input_ids"])  # type: ignore[operator]
        needed = prompt_tokens + self.query_tokens + settings.max_new_tokens
        if needed > self.limit:
            raise BadRequest(
                f"prompt is {prompt_tokens} tokens; with max_new_tokens {settings.max_new_tokens} "
                f"and {self.query_tokens} image tokens that is {needed}, more than the model's "
                f"limit of {self.limit} tokens: shorten the prompt or lower max_new_tokens"
            )


class ServingCore:
    """One loaded captioner and the server's settings; see the module docstring.

    ``run`` is not thread-safe (the model is not): call it from one thread at a time.
    """

    def __init__(
        self, captioner: CaptionerLike, config: ServeConfig, budget: TokenBudget | None = None
    ) -> None:
        self.captioner = captioner
        self.config = config
        self.limits = config.limits()
        # Bounds the full-size frames held at once across concurrent requests (Flask threads),
        # let in in their clients' turns.
        self.decoding = TurnSemaphore(config.decoders())
        self.defaults = settings_to_fields(config.generation_defaults())
        self.budget = budget or TokenBudget.of(captioner)
        self.input_size = captioner.input_size
        self.revision: str | None = getattr(captioner, "revision", None)  # the hub commit
        self.precision: str | None = getattr(captioner, "precision", None)  # float16…
        # Frames per model call: the setting, else the captioner's own (auto) batch size.
        self.max_batch: int = config.max_batch or getattr(captioner, "batch_size", None) or 1

    def decode(
        self,
        frames: Sequence[bytes],
        fields: Mapping[str, str],
        batched: bool,
        client: str = "",
    ) -> CaptionRequest:
        """A valid request with model-sized frames, or ``BadRequest``.

        Sizes are checked from the image headers before any pixel is decoded; then each
        frame is decoded and resized to the model's input size before the next, so a
        request of large frames holds one at full size; at most ``config.decoders()``
        requests decode at once across threads, let in in their ``client``'s turn (a peer
        address). A request decodes its frames in one go once in: one client's many
        requests of large frames hold another client's request up for about one of theirs
        (taken frame by frame, in turns, each of 16 such requests held its thread until
        they all ended together, and a request waiting for a thread waited 33 s).
        """
        with self.decoding.held(client):
            request = build_request(
                frames, {**self.defaults, **fields}, batched, self.limits, size=self.input_size
            )
        self.budget.check(request.settings)
        return request

    def run(self, requests: Sequence[CaptionRequest]) -> list[Outcome]:
        """One ``Outcome`` per request, in order; never raises for a model error."""
        groups: dict[GenerationSettings, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.settings, []).append(index)
        outcomes: list[Outcome] = [Outcome() for _ in requests]
        for settings, members in groups.items():
            group = [requests[i] for i in members]
            results = each_alone(partial(self._caption, settings=settings), group, "requests")
            for i, result in zip(members, results, strict=True):
                failed = isinstance(result, Exception)
                outcomes[i] = self._failure(result) if failed else Outcome(captions=tuple(result))
        return outcomes

    @staticmethod
    def _failure(exc: Exception) -> Outcome:
        log.error("the model failed on a request: %s: %s", type(exc).__name__, exc)
        return Outcome(
            error=ModelFailure(f"the model failed on this request: {type(exc).__name__}: {exc}")
        )

    def _caption(
        self, requests: Sequence[CaptionRequest], settings: GenerationSettings
    ) -> list[list[str]]:
        frames = [image for request in requests for image in request.images]
        captions: list[str] = []
        # max_batch None: the captioner's own batching (its auto batch size) applies.
        step = self.config.max_batch or len(frames)
        for start in range(0, len(frames), step):
            captions.extend(self.captioner.caption(frames[start : start + step], settings))
        if len(captions) != len(frames):
            raise RuntimeError(f"model returned {len(captions)} captions for {len(frames)} frames")
        answers, start = [], 0
        for request in requests:
            answers.append(captions[start : start + len(request.images)])
            start += len(request.images)
        return answers

    def info(self, model_name: str) -> dict[str, object]:
        """What a client needs to know before it sends frames (both servers answer it);
        ``revision``: the hub commit of the model, for a hub model; ``precision``: what its
        language model computes in (``float16``…), which a client records with each video."""
        info: dict[str, object] = {
            "model": model_name,
            "input_size": list(self.input_size),
            "max_frames_per_request": self.limits.max_frames,
            "max_batch": self.max_batch,
            "token_limit": self.budget.limit,
        }
        if self.revision:
            info["revision"] = self.revision
        if self.precision:
            info["precision"] = self.precision
        return info
