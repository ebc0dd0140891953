"""Build a tiny random-weights cross-encoder (BERT with one score), without any model hub.

vLLM serves it as a scoring model (``/v1/rerank``, ``/rerank``, ``/v2/rerank``, ``/v1/score``):
tests of those endpoints run against the real server with it. Run with the vLLM environment's
Python: ``.venv-vllm/bin/python -m launch.tiny_reranker DIR``. Its scores are meaningless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SERVED_NAME = "tiny-reranker"
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "the a an red green blue car dog cat bicycle road person walking running sky tree house query document "
    "text video frame scene moment speech said opened box deadline meeting"
)


def build_tokenizer() -> Any:
    """A WordPiece tokenizer trained on a few words, with BERT's special tokens and pair template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [_WORDS] * 10 + [str(n) for n in range(100)]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=_SPECIALS))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def build(directory: Path, seed: int = 0) -> Path:
    """Write config, random weights and tokenizer into ``directory``."""
    from launch import torchvision_shim

    torchvision_shim.install()
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["BertForSequenceClassification"],
    )
    directory.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m launch.tiny_reranker DIR``."""
    parser = argparse.ArgumentParser(prog="tiny-reranker", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"tiny random-weights cross-encoder written to {build(args.directory, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
