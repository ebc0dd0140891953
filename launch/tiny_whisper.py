"""Build a tiny random-weights Whisper (speech recognition), without any model hub.

vLLM serves it at ``/v1/audio/transcriptions`` and ``/translations``: tests of those endpoints
run against the real server with it. Run with the vLLM environment's Python:
``.venv-vllm/bin/python -m launch.tiny_whisper DIR``. Its transcripts are meaningless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SERVED_NAME = "tiny-whisper"
_WORDS = "the a red car said she about deadline meeting box opened hello world we will ship it on friday yes no"


def _special_tokens() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in LANGUAGES]
    tasks = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, *tasks, "<|notimestamps|>"]


def build_tokenizer(directory: Path) -> Any:
    """A byte-level BPE tokenizer trained on a few words, with Whisper's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import WhisperTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_WORDS] * 20, trainer)
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    end = "<|endoftext|>"
    return WhisperTokenizerFast(tokenizer_file=str(path), unk_token=end, bos_token=end, eos_token=end, pad_token=end)


def build(directory: Path, seed: int = 0) -> Path:
    """Write config, random weights, tokenizer and feature extractor into ``directory``."""
    from launch import torchvision_shim

    torchvision_shim.install()
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    start, end = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>"])
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        encoder_layers=1,
        encoder_attention_heads=1,
        decoder_layers=1,
        decoder_attention_heads=1,
        d_model=64,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=start,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    WhisperForConditionalGeneration(config).save_pretrained(directory, safe_serialization=True)
    GenerationConfig(decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, max_length=448).save_pretrained(
        directory
    )
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(
        directory
    )
    return directory


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m launch.tiny_whisper DIR``."""
    parser = argparse.ArgumentParser(prog="tiny-whisper", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"tiny random-weights Whisper written to {build(args.directory, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
