"""Build the tiny Llama model the real-vLLM paths serve: random weights, deterministic from a seed.

Run it with the vLLM environment's Python (it has torch, transformers and tokenizers):

    .venv-vllm/bin/python vllm/build_model.py --out .nexus/models/tiny-llama --seed 0

Shape (issue 10): hidden 128, 2 heads (head_dim 64; vLLM's CPU attention refuses
head_dim 16 with "Unsupported CPU attention configuration"), 2 layers. The tokenizer is a
byte-level BPE trained offline on the fixed corpus below, so every byte string has a
tokenization and the build needs no network. The chat template is a plain Jinja template
that vLLM's OpenAI server applies for ``/v1/chat/completions``.

The same seed gives the same files, byte for byte (``tests/vllm/test_model.py`` builds twice
and compares digests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

SPECIAL = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 1024
MAX_POSITIONS = 512
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# A fixed, plain corpus: the merges only need to be deterministic, not meaningful.
CORPUS = [
    "Nexus serves language models with vLLM behind a KServe transformer.",
    "A canary revision takes a share of the traffic until the analysis promotes it.",
    "The router falls back to another model when the primary answers an upstream failure.",
    "Rate limits count requests and tokens per key in a sliding window kept in Redis.",
    "The quick brown fox jumps over the lazy dog, then the dog sleeps in the sun.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000; punctuation: , . ; : ! ? ' \" ( ) [ ] { }",
    "hello world, hello there, how are you today? I am fine, thank you for asking.",
]


def build(out: Path, seed: int) -> dict[str, str]:
    """Write config, weights, tokenizer and template to ``out``; return file -> sha256."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 8, trainer=trainer)
    # S106: special-token names, not passwords.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",  # noqa: S106
        eos_token="</s>",  # noqa: S106
        pad_token="<pad>",  # noqa: S106
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    return digests(out)


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "digests.json"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    found = build(args.out, args.seed)
    (args.out / "digests.json").write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"out": str(args.out), "files": found}))


if __name__ == "__main__":
    main()
