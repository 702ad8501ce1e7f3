"""Build the tiny Llama model the real-vLLM paths serve: trained on Python's own docs, from a seed.

Run it with the vLLM environment's Python (it has torch, transformers and tokenizers):

    .venv-vllm/bin/python vllm/build_model.py --out .nexus/models/tiny-llama --seed 0

Shape (issue 10): hidden 128, 2 heads (head_dim 64; vLLM's CPU attention refuses
head_dim 16 with "Unsupported CPU attention configuration"), 2 layers. The text is the
standard library's documentation topics (``pydoc_data.topics``, shipped with Python, so the
build needs no network): topics are split into a training part and a held-out part by their
sorted position. The tokenizer is a byte-level BPE trained on the training part, so every
byte string has a tokenization; the model is then trained on it for ``STEPS`` steps of AdamW
(issue 21: a random model cannot tell a good release from a broken one). The chat template
is a plain Jinja template that vLLM's OpenAI server applies for ``/v1/chat/completions``.

Beside the model folder, ``--evaluation-out`` gets the quality gate's evaluation set
(``nexus.release.evaluation``), made from the held-out topics: a prompt of a sentence's
first words, its next words as the reference, and a check that the greedy answer holds a
word.

The same seed gives the same files, byte for byte, on one machine
(``tests/vllm/test_model_and_storage.py`` builds twice and compares digests): the batches
come from a seeded generator, torch runs with deterministic algorithms on a fixed number of
threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
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
HELD_OUT_EVERY = 8  # every 8th topic (sorted by name) is held out for the evaluation set
STEPS = 400
BATCH = 16
CONTEXT = 64
LEARNING_RATE = 3e-3
THREADS = 1  # two threads spun ~25x the CPU time per step on a loaded machine
EVAL_EXAMPLES = 12
PROMPT_WORDS = 10
REFERENCE_WORDS = 8


def corpus() -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): the documentation topics of this Python."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % HELD_OUT_EVERY != HELD_OUT_EVERY // 2]
    held = [topics[n] for i, n in enumerate(names) if i % HELD_OUT_EVERY == HELD_OUT_EVERY // 2]
    return train, held


def evaluation_set(held_out: list[str]) -> dict[str, object]:
    """Prompts and references from the opening words of held-out prose paragraphs."""
    examples: list[dict[str, object]] = []
    n = PROMPT_WORDS + REFERENCE_WORDS
    paragraphs = [" ".join(p.split()) for text in held_out for p in text.split("\n\n")]
    prose = [
        p for p in paragraphs
        if len(p.split()) >= n and p[0].isupper()
        and all(w.strip(",.;:").isalpha() for w in p.split()[:n])
    ]  # fmt: skip
    step = max(1, len(prose) // EVAL_EXAMPLES)
    for paragraph in prose[::step][:EVAL_EXAMPLES]:
        words = paragraph.split()
        examples.append({
            "id": f"held-out-{len(examples)}",
            "prompt": " ".join(words[:PROMPT_WORDS]),
            "reference": " " + " ".join(words[PROMPT_WORDS:n]),
            "max_tokens": 8,
            "checks": [{"regex": "[A-Za-z]{3}"}],
        })  # fmt: skip
    return {"examples": examples}


def train(model: object, ids: list[int], seed: int) -> list[float]:
    """AdamW on random windows of ``ids``; the losses of every 50th step."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)  # type: ignore[attr-defined]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / STEPS)
    model.train()  # type: ignore[attr-defined]
    losses = []
    for step in range(STEPS):
        starts = torch.randint(0, len(data) - CONTEXT - 1, (BATCH,), generator=generator)
        batch = torch.stack([data[s : s + CONTEXT] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss  # type: ignore[operator]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == STEPS - 1:
            losses.append(round(float(loss.detach()), 4))
    model.eval()  # type: ignore[attr-defined]
    return losses


def build(out: Path, seed: int, evaluation_out: Path | None = None) -> dict[str, str]:
    """Write config, weights, tokenizer and template to ``out``; return file -> sha256."""
    import torch

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    training, held_out = corpus()
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
    bpe.train_from_iterator(training, trainer=trainer)
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
    ids = [i for text in training for i in tokenizer(text)["input_ids"]]
    losses = train(model, ids, seed)
    print(json.dumps({"training_tokens": len(ids), "losses": losses}), file=sys.stderr)
    model.save_pretrained(out, safe_serialization=True)
    if evaluation_out is not None:
        text = json.dumps(evaluation_set(held_out), indent=2) + "\n"
        evaluation_out.write_text(text, encoding="utf-8")
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
    parser.add_argument(
        "--evaluation-out",
        type=Path,
        default=None,
        help="where to write the evaluation set from held-out text (JSON)",
    )
    args = parser.parse_args()
    found = build(args.out, args.seed, args.evaluation_out)
    (args.out / "digests.json").write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"out": str(args.out), "files": found}))


if __name__ == "__main__":
    main()
