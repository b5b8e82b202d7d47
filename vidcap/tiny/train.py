"""Train the tiny BLIP-2 on generated scenes, on CPU, and save it with ``save_pretrained``.

    python -m vidcap.tiny.train --out vidcap/tiny/checkpoint [--steps N] [--seed S]

Captioning: ``[<image> x Q] </s> caption </s>`` with the loss on the caption and the
final ``</s>``. Question mode: ``[<image> x Q] </s> question: is there a red circle in
this picture ? answer : yes </s>`` with the loss on the answer and ``</s>`` only.
Image, prompt and pad positions are labelled -100, as ``Blip2ForConditionalGeneration``
expects; the next-token cross-entropy is averaged over caption rows and question rows
separately, so a one-word answer weighs as much as a whole caption.

One training-only addition: :class:`ObjectProbe`, a linear head max-pooled over the
vision tokens that must tell which (colour, shape) pairs are in the image. Without it
a from-scratch ViT this small learns colours fast but shapes hardly at all within a
CPU budget. The head is dropped before saving; the checkpoint is a plain BLIP-2.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from vidcap.tiny.build import MAX_CAPTION_TOKENS, build_processor, new_model
from vidcap.tiny.grammar import BACKGROUNDS, COLOURS, SHAPES
from vidcap.tiny.scenes import (
    Example,
    NoiseBank,
    make_example,
    make_examples,
    random_question,
)

log = logging.getLogger(__name__)

IGNORE = -100
TRAIN_SEED = 1234
EVAL_SEED = 987_654


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    question_fraction: float = 0.3
    same_colour_fraction: float = 0.2
    """Extra share of two-shapes-of-one-colour scenes, the ones most often miscounted."""
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = TRAIN_SEED
    threads: int = 2
    qa_weight: float = 1.5
    """Weight of the question-mode loss (averaged over answer tokens) against the caption loss."""
    aux_weight: float = 5.0
    """Weight of the training-only object probe loss (0: language-model loss alone)."""
    eval_every: int = 0
    """Every this many steps, log held-out accuracy on a few examples (0: never)."""


def encode_batch(
    processor: Blip2Processor, prompts: list[str], targets: list[str]
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids/attention_mask/labels for ``prompt + target + </s>`` sequences."""
    tok = processor.tokenizer
    image_ids = [tok.convert_tokens_to_ids("<image>")] * processor.num_query_tokens
    prompt_ids = tok(prompts)["input_ids"]  # each starts with </s> as BOS, like generate()
    target_ids = tok(targets, add_special_tokens=False)["input_ids"]
    rows: list[tuple[list[int], list[int]]] = []
    for prompt, target in zip(prompt_ids, target_ids, strict=True):
        answer = [*target, tok.eos_token_id]
        ids = image_ids + prompt + answer
        labels = [IGNORE] * (len(image_ids) + len(prompt)) + answer
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, : len(labs)] = torch.tensor(labs)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def make_batch(
    processor: Blip2Processor,
    rng: np.random.Generator,
    bank: NoiseBank,
    size: int,
    question_fraction: float,
    same_colour_fraction: float = 0.0,
) -> dict[str, torch.Tensor]:
    examples = [make_example(rng, bank, same_colour_fraction) for _ in range(size)]
    prompts: list[str] = []
    targets: list[str] = []
    for example in examples:
        if rng.random() < question_fraction:
            prompt, answer = random_question(rng, example.scene)
            prompts.append(prompt)
            targets.append(answer)
        else:
            prompts.append("")
            targets.append(example.caption)
    batch = encode_batch(processor, prompts, targets)
    batch["pixel_values"] = pixel_values(processor, examples)
    batch[AUX_KEY] = object_targets(examples)
    batch[QUESTION_KEY] = torch.tensor([bool(prompt) for prompt in prompts])
    return batch


def split_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, questions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The usual next-token cross-entropy (labels -100 ignored), averaged separately over
    caption rows and question rows, so a one-word answer weighs as much as a caption."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1)
    per_token = torch.nn.functional.cross_entropy(
        shift_logits, shift_labels, ignore_index=IGNORE, reduction="none"
    ).view(labels.shape[0], -1)
    counted = (labels[:, 1:] != IGNORE).float()
    losses = []
    for rows in (~questions, questions):
        tokens = counted[rows].sum()
        losses.append((per_token[rows].sum() / tokens) if tokens > 0 else logits.sum() * 0.0)
    return losses[0], losses[1]


OBJECTS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
AUX_KEY = "object_targets"
QUESTION_KEY = "is_question"


def object_targets(examples: list[Example]) -> torch.Tensor:
    """Multi-hot (batch, len(OBJECTS) + len(BACKGROUNDS)): the (colour, shape) pairs each
    image holds, then its background."""
    targets = torch.zeros((len(examples), len(OBJECTS) + len(BACKGROUNDS)))
    for row, example in enumerate(examples):
        for obj in example.scene.objects:
            targets[row, OBJECTS.index(obj)] = 1.0
        targets[row, len(OBJECTS) + BACKGROUNDS.index(example.scene.background)] = 1.0
    return targets


class ObjectProbe(torch.nn.Module):
    """Training-only auxiliary heads that must tell which (colour, shape) pairs and which
    background are in the image.

    One scores each pair on each patch token of the vision tower and takes the max;
    the other reads the pairs off the mean of the projected query outputs (what the
    language model receives). A ViT trained from scratch this small learns colour
    fast but shape hardly at all through the language model alone; these make the
    vision tower learn local shape features, and the query outputs carry the set of
    objects that captions and yes/no answers both need. The heads are thrown away:
    the checkpoint is a plain BLIP-2.
    """

    def __init__(self, model: Blip2ForConditionalGeneration) -> None:
        super().__init__()
        labels = len(OBJECTS) + len(BACKGROUNDS)
        self.patch_head = torch.nn.Linear(model.config.vision_config.hidden_size, labels)
        self.query_head = torch.nn.Linear(model.config.text_config.hidden_size, labels)
        self.seen: dict[str, torch.Tensor] = {}
        self._hooks = [
            model.vision_model.register_forward_hook(self._keep("patches")),
            model.language_projection.register_forward_hook(self._keep("queries")),
        ]

    def detach(self) -> None:
        """Stop watching the model (after training)."""
        for hook in self._hooks:
            hook.remove()
        self.seen.clear()

    def _keep(self, name: str) -> Callable[[torch.nn.Module, object, object], None]:
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            self.seen[name] = output if name == "queries" else output.last_hidden_state  # type: ignore[attr-defined]

        return hook

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        patches = self.patch_head(self.seen["patches"][:, 1:]).amax(dim=1)  # not the CLS token
        queries = self.query_head(self.seen["queries"].mean(dim=1))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(patches, targets) + bce(queries, targets)


def pixel_values(processor: Blip2Processor, examples: list[Example]) -> torch.Tensor:
    """What ``processor(images=...)`` gives for model-size images, without its per-image PIL work.

    The images are already IMAGE_SIZE square, so the processor's resize is the identity;
    tests check that both agree.
    """
    ip = processor.image_processor
    images = np.stack([e.image for e in examples]).astype(np.float32) * ip.rescale_factor
    mean = np.asarray(ip.image_mean, dtype=np.float32)
    std = np.asarray(ip.image_std, dtype=np.float32)
    return torch.from_numpy((images - mean) / std).permute(0, 3, 1, 2).contiguous()


class BatchStream:
    """Batches made in a background thread (one producer: the same sequence for the same seed)."""

    def __init__(self, cfg: TrainConfig, processor: Blip2Processor) -> None:
        self._queue: queue.Queue[dict[str, torch.Tensor]] = queue.Queue(maxsize=3)
        self._args = (cfg, processor)
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        cfg, processor = self._args
        rng = np.random.default_rng(cfg.seed)
        bank = NoiseBank(rng)
        for _ in range(cfg.steps):
            batch = make_batch(
                processor,
                rng,
                bank,
                cfg.batch_size,
                cfg.question_fraction,
                cfg.same_colour_fraction,
            )
            self._queue.put(batch)

    def next(self) -> dict[str, torch.Tensor]:
        return self._queue.get(timeout=120)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    torch.set_num_threads(cfg.threads)
    processor = build_processor()
    model = new_model(processor, cfg.seed)
    probe = ObjectProbe(model)
    named = [*model.named_parameters(), *probe.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    stream = BatchStream(cfg, processor)
    started = time.monotonic()
    running = aux_running = qa_running = 0.0
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = stream.next()
        targets = batch.pop(AUX_KEY)
        questions = batch.pop(QUESTION_KEY)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        lm_loss, qa_loss = split_lm_loss(logits, labels, questions)
        aux_loss = probe.loss(targets)
        loss = lm_loss + cfg.qa_weight * qa_loss + cfg.aux_weight * aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = 0.98 * running + 0.02 * lm_loss.item() if step else lm_loss.item()
        aux_running = 0.98 * aux_running + 0.02 * aux_loss.item() if step else aux_loss.item()
        qa_running = 0.98 * qa_running + 0.02 * qa_loss.item() if step else qa_loss.item()
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info(
                "step %d/%d loss %.4f qa %.4f aux %.4f lr %.2e %.0fs",
                step,
                cfg.steps,
                running,
                qa_running,
                aux_running,
                lr_at(step, cfg),
                time.monotonic() - started,
            )
        if cfg.eval_every and step and step % cfg.eval_every == 0:
            model.eval()
            caption_acc, qa_acc = evaluate(model, processor, seed=EVAL_SEED, count=100)
            log.info(
                "step %d eval: captions %.1f%%, questions %.1f%%",
                step,
                100 * caption_acc,
                100 * qa_acc,
            )
            model.train()
    probe.detach()
    model.eval()
    return model, processor


@torch.no_grad()
def generate_captions(
    model: Blip2ForConditionalGeneration,
    processor: Blip2Processor,
    images: list[np.ndarray],
) -> list[str]:
    """Greedy captions for model-size RGB images, exactly as users call the model."""
    inputs = processor(images=images, return_tensors="pt")
    out = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=MAX_CAPTION_TOKENS)
    return [text.strip() for text in processor.batch_decode(out, skip_special_tokens=True)]


@torch.no_grad()
def answer_questions(
    model: Blip2ForConditionalGeneration,
    processor: Blip2Processor,
    images: list[np.ndarray],
    prompts: list[str],
) -> list[str]:
    """Greedy answers to one prompt per image, batched by prompt length (no padding)."""
    lengths = [len(ids) for ids in processor.tokenizer(prompts)["input_ids"]]
    answers = [""] * len(prompts)
    for length in sorted(set(lengths)):
        rows = [i for i, n in enumerate(lengths) if n == length]
        inputs = processor(
            images=[images[i] for i in rows], text=[prompts[i] for i in rows], return_tensors="pt"
        )
        out = model.generate(**inputs, max_new_tokens=3)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(rows, texts, strict=True):
            answers[i] = text.strip()
    return answers


def evaluate(
    model: Blip2ForConditionalGeneration,
    processor: Blip2Processor,
    seed: int,
    count: int,
) -> tuple[float, float]:
    """(caption exact-match, question accuracy) on ``count`` held-out examples from ``seed``."""
    examples = make_examples(seed, count)
    images = [e.image for e in examples]
    captions = generate_captions(model, processor, images)
    caption_acc = float(np.mean([c == e.caption for c, e in zip(captions, examples, strict=True)]))
    rng = np.random.default_rng(seed + 1)
    questions = [random_question(rng, e.scene) for e in examples]
    answers = answer_questions(model, processor, images, [q for q, _ in questions])
    qa_acc = float(np.mean([a == t for a, (_, t) in zip(answers, questions, strict=True)]))
    misses = [(c, e.caption) for c, e in zip(captions, examples, strict=True) if c != e.caption]
    for caption, truth in misses[:10]:
        log.debug("miss: %r for %r", caption, truth)
    return caption_acc, qa_acc


def save(model: Blip2ForConditionalGeneration, processor: Blip2Processor, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    parser.add_argument("--eval-count", type=int, default=300)
    parser.add_argument(
        "--eval-every", type=int, default=0, help="log held-out accuracy every N steps"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        eval_every=args.eval_every,
    )
    started = time.monotonic()
    model, processor = train(cfg)
    elapsed = time.monotonic() - started
    save(model, processor, args.out)
    caption_acc, qa_acc = evaluate(model, processor, seed=args.eval_seed, count=args.eval_count)
    print(f"trained {cfg.steps} steps in {elapsed:.0f}s -> {args.out}")
    print(
        f"held-out (seed {args.eval_seed}, n={args.eval_count}): captions {caption_acc:.1%}, questions {qa_acc:.1%}"
    )


if __name__ == "__main__":
    main()
