"""Build a tiny BLIP-2 checkpoint from nothing: same classes as the real model.

The checkpoint is a standard ``save_pretrained`` directory (config.json,
model.safetensors, tokenizer.json, processor/preprocessor configs), so it loads
through exactly the same ``from_pretrained`` path as ``Salesforce/blip2-opt-2.7b``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    PreTrainedTokenizerFast,
)

from vidcap.tiny.grammar import vocabulary

IMAGE_SIZE = 64
NUM_QUERY_TOKENS = 8
MAX_CAPTION_TOKENS = 24


def build_tokenizer(size: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny grammar, saved in the standard files; ``size``:
    padded with the words ``w<id>`` to that many (a model with a wider vocabulary, such as
    ``bench/blip2_sized.py``'s OPT-sized one, whose every token then reads as a word)."""
    vocab = {word: i for i, word in enumerate(vocabulary())}
    vocab.update({f"w{i}": i for i in range(len(vocab), size or 0)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Users type prompts as "Question: ... Answer:"; the vocabulary is lowercase.
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=NUM_QUERY_TOKENS + 64,
        padding_side="left",
    )
    tok.add_bos_token = True
    return tok


def build_processor(vocab_size: int | None = None) -> Blip2Processor:
    image_processor = BlipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    tokenizer = build_tokenizer(vocab_size)
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=NUM_QUERY_TOKENS)


def build_config(vocab_size: int, image_token_index: int, pad_id: int, eos_id: int) -> Blip2Config:
    vision = {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        # Blip2VisionConfig defaults to 1e-10 (its weights always come pretrained);
        # from scratch that leaves the vision tower dead, so use the usual 0.02.
        "initializer_range": 0.02,
    }
    qformer = {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "encoder_hidden_size": 96,
        "cross_attention_frequency": 1,
        "vocab_size": vocab_size,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    text = {
        "model_type": "opt",
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "ffn_dim": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "word_embed_proj_dim": 128,
        "pad_token_id": pad_id,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "dropout": 0.0,
        "attention_dropout": 0.0,
    }
    return Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=image_token_index,
    )


def new_model(processor: Blip2Processor, seed: int) -> Blip2ForConditionalGeneration:
    """A freshly initialised tiny model for ``processor``'s tokenizer, the same for the same seed."""
    tok = processor.tokenizer
    config = build_config(
        vocab_size=len(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    # transformers initialises the query tokens to zeros (they come pretrained in real
    # BLIP-2); identical queries learn slowly from scratch, so draw them like LAVIS does.
    with torch.no_grad():
        model.query_tokens.normal_(0.0, config.qformer_config.initializer_range)
    model.generation_config.max_new_tokens = MAX_CAPTION_TOKENS
    return model


def build_tiny(out_dir: Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny BLIP-2 checkpoint to ``out_dir``."""
    processor = build_processor()
    model = new_model(processor, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
