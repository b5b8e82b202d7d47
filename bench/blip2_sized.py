"""A BLIP-2 with the real Salesforce/blip2-opt-2.7b architecture and random weights.

Throughput depends on the architecture, not on the weights, so this measures what the real
model costs where its weights cannot be downloaded. Generation length is pinned
(``min_new_tokens`` = ``max_new_tokens``) so random weights do not stop early.

    python bench/blip2_sized.py --save DIR [--device cuda] [--tokens 20]

writes it as a ``save_pretrained`` directory (fp16: 7.7 GB), which ``vidcap caption
--model DIR`` and TorchServe (``VIDCAP_MODEL=DIR``) load like the real checkpoint
(``bench/gpu/torchserve.sh``); its ``generation_config.json`` pins ``min_new_tokens``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from vidcap.model import Captioner
from vidcap.tiny.build import build_processor

VISION = dict(
    hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
    image_size=224, patch_size=14,
)  # fmt: skip
QFORMER = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, encoder_hidden_size=1408
)
OPT_2_7B = dict(
    model_type="opt", hidden_size=2560, ffn_dim=10240, num_hidden_layers=32,
    num_attention_heads=32, vocab_size=50272, word_embed_proj_dim=2560,
    max_position_embeddings=2048,
)  # fmt: skip


def blip2_sized_captioner(
    device: str, dtype: torch.dtype, batch_size: int, tokens: int
) -> Captioner:
    processor = build_processor(OPT_2_7B["vocab_size"])  # captions of words, not ""
    processor.image_processor.size = {"height": 224, "width": 224}
    tok = processor.tokenizer
    text = dict(
        OPT_2_7B,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = Blip2Config(
        vision_config=VISION,
        qformer_config=QFORMER,
        text_config=text,
        num_query_tokens=32,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    processor.num_query_tokens = 32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Blip2ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.min_new_tokens = tokens
    return Captioner(processor, model, device, batch_size)


def save_blip2_sized(folder: Path, device: str, tokens: int) -> None:
    """The model in fp16, as a ``save_pretrained`` directory with its processor."""
    captioner = blip2_sized_captioner(device, torch.float16, None, tokens)
    captioner.model.save_pretrained(folder)
    captioner.processor.save_pretrained(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, required=True, metavar="DIR")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()
    save_blip2_sized(args.save, args.device, args.tokens)
    print(f"blip2_sized.py: saved to {args.save}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
