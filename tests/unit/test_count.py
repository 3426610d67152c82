"""The token counters: real transformers and openai objects, shaped fakes for the others."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_tpw import count
from pytest_tpw.count import (
    OpenAITokens,
    SglangTokens,
    TokenCountError,
    VllmTokens,
    hf_new_tokens,
    hf_tokens,
    llamacpp_tokens,
    openai_tokens,
    openai_usage,
    vllm_cached_prompt_tokens,
)
from pytest_tpw.errors import TpwError
from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

# ---------------------------------------------------------------------------------------------
# transformers: a tiny random Llama, rows forced to stop at chosen steps
# ---------------------------------------------------------------------------------------------

VOCAB = 128
EOS = 7
PAD = 0
MAX_NEW = 8
# new position at which each row emits EOS (None: never, runs to MAX_NEW)
STOPS = (2, None, 5)


def truth(stops: tuple[int | None, ...] = STOPS, max_new: int = MAX_NEW) -> list[int]:
    """Tokens each row really generated: up to and including its EOS, else max_new."""
    return [max_new if s is None else s + 1 for s in stops]


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def transformers() -> Any:
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama(torch: Any, transformers: Any) -> Any:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    return model.eval().requires_grad_(False)


def force_eos(
    torch: Any, transformers: Any, prompt_width: int, stops: tuple[int | None, ...]
) -> Any:
    """A LogitsProcessor: EOS (and PAD) forbidden except at each row's chosen step."""

    class ForceEos(transformers.LogitsProcessor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            step = input_ids.shape[1] - prompt_width
            scores = scores.clone()
            scores[:, EOS] = -math.inf
            scores[:, PAD] = -math.inf
            for row, stop in enumerate(stops):
                if stop == step:
                    scores[row, :] = -math.inf
                    scores[row, EOS] = 0.0
            return scores

    return transformers.LogitsProcessorList([ForceEos()])


def generate(llama: Any, torch: Any, transformers: Any, ids: Any, **kw: Any) -> Any:
    procs = force_eos(torch, transformers, ids.shape[1], STOPS)
    with torch.inference_mode():
        return llama.generate(
            ids,
            attention_mask=kw.pop("attention_mask", torch.ones_like(ids)),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            logits_processor=procs,
            **kw,
        )


@pytest.fixture(scope="module")
def prompt(torch: Any) -> Any:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(10, VOCAB, (3, 6), generator=gen)


def test_generate_output_has_the_expected_shape_of_early_stops(
    llama: Any, torch: Any, transformers: Any, prompt: Any
) -> None:
    # guards the fixture itself: rows really stop where forced, then carry pad fill
    out = generate(llama, torch, transformers, prompt)
    new = out[:, prompt.shape[1] :]
    assert new.shape == (3, MAX_NEW)
    assert new[0, 2].item() == EOS and new[0, 3:].eq(PAD).all()
    assert not new[1].eq(EOS).any()
    assert new[2, 5].item() == EOS and new[2, 6:].eq(PAD).all()


def test_hf_new_tokens_counts_each_row_up_to_its_eos(
    llama: Any, torch: Any, transformers: Any, prompt: Any
) -> None:
    out = generate(llama, torch, transformers, prompt)
    expected = sum(truth())
    assert hf_new_tokens(out, prompt, eos_token_id=EOS, pad_token_id=PAD) == expected
    assert hf_new_tokens(out, prompt.shape[1], generation_config=llama.generation_config) == (
        expected
    )
    assert hf_new_tokens(out, prompt, generation_config=llama) == expected
    assert hf_tokens(prompt, llama)(out) == expected
    # None in place of the model: no EOS, every new position counts
    assert hf_tokens(prompt, None)(out) == 3 * MAX_NEW
    # the naive count the README used to show is wrong here
    assert out.numel() != expected
    # the pure-Python path (lists, numpy) agrees with the tensor path
    assert hf_new_tokens(out.tolist(), prompt.tolist(), eos_token_id=EOS) == expected
    assert hf_new_tokens(out.numpy(), prompt.shape[1], eos_token_id=[EOS, 99]) == expected


def test_hf_new_tokens_reads_generate_output_objects(
    llama: Any, torch: Any, transformers: Any, prompt: Any
) -> None:
    out = generate(llama, torch, transformers, prompt, return_dict_in_generate=True)
    assert hasattr(out, "sequences")
    assert hf_new_tokens(out, prompt, generation_config=llama) == sum(truth())


def test_hf_new_tokens_with_left_padded_prompts(
    llama: Any, torch: Any, transformers: Any, prompt: Any
) -> None:
    padded = prompt.clone()
    mask = torch.ones_like(padded)
    padded[0, :3] = PAD  # row 0 has a 3-token prompt, left-padded to the batch width
    mask[0, :3] = 0
    out = generate(llama, torch, transformers, padded, attention_mask=mask)
    assert hf_new_tokens(
        out, {"input_ids": padded, "attention_mask": mask}, generation_config=llama
    ) == sum(truth())


def test_hf_new_tokens_without_eos_counts_every_new_position(torch: Any) -> None:
    out = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 6, 7, 8]])
    assert hf_new_tokens(out, 2) == 6
    assert hf_new_tokens(out, 5) == 0


def test_hf_new_tokens_eos_counts_once_and_pad_equal_to_eos(torch: Any) -> None:
    # pad id == eos id (the common default): the fill after the EOS is not counted
    out = torch.tensor([[9, 9, 4, 2, 2, 2], [9, 9, 4, 5, 6, 2]])
    assert hf_new_tokens(out, 2, eos_token_id=2) == 2 + 4
    assert hf_new_tokens(out.tolist(), 2, eos_token_id=2) == 2 + 4


def test_hf_new_tokens_refuses_an_eos_that_generate_did_not_stop_on(torch: Any) -> None:
    out = torch.tensor([[9, 9, 4, 5, 6, 0], [9, 9, 4, 4, 4, 4]])
    for ids in (out, out.tolist()):
        with pytest.raises(TokenCountError, match="row 0 has an EOS id at new position 1"):
            hf_new_tokens(ids, 2, eos_token_id=5, pad_token_id=0)


@pytest.mark.parametrize(
    ("output", "prompt", "match"),
    [
        ("not ids", 2, "neither a tensor of token ids nor a generate\\(\\) output"),
        ([[1, 2]], 3, "shorter than the prompt"),
        ([[1, 2]], -1, "negative"),
        ([[1, 2]], {"attention_mask": [[1]]}, "has no 'input_ids'"),
        ([[1, 2]], object(), "cannot read a prompt width"),
        ([[1, 2]], True, "bool"),
    ],
)
def test_hf_new_tokens_errors_name_what_to_pass(output: Any, prompt: Any, match: str) -> None:
    with pytest.raises(TokenCountError, match=match) as info:
        hf_new_tokens(output, prompt)
    assert isinstance(info.value, TpwError)


def test_hf_new_tokens_rejects_3d_output(torch: Any) -> None:
    with pytest.raises(TokenCountError, match="expected \\(batch, length\\)"):
        hf_new_tokens(torch.zeros(2, 3, 4, dtype=torch.long), 1)


def test_streamer_counts_new_ids_and_skips_prompt_and_pad_fill(
    llama: Any, torch: Any, transformers: Any, prompt: Any
) -> None:
    streamer = count.TokenCountingStreamer(EOS)
    assert isinstance(streamer, transformers.generation.streamers.BaseStreamer)
    generate(llama, torch, transformers, prompt, streamer=streamer)
    assert streamer.per_row == [] and streamer.count == sum(truth())
    # a second call on the same streamer: the prompt is skipped again
    generate(llama, torch, transformers, prompt, streamer=streamer)
    assert streamer.take() == 2 * sum(truth())
    assert streamer.count == 0


def test_streamer_without_eos_counts_every_put_and_checks_rows() -> None:
    s = count.TokenCountingStreamer(skip_prompt=False)
    s.put([1, 2])
    s.put([[3, 4], [5, 6]])
    assert s.count == 6 and s.per_row == [3, 3]
    with pytest.raises(TokenCountError, match="a step has 3 rows, earlier steps had 2"):
        s.put([1, 2, 3])


def test_streamer_as_tokens_callable_in_a_measured_test(pytester: pytest.Pytester) -> None:
    pytest.importorskip("transformers")
    pytester.makeini("[pytest]\ntpw_sensor = sim\ntpw_max_delay = 0\n")
    pytester.makepyfile(
        """
        from pytest_tpw.count import TokenCountingStreamer

        def fake_generate(ids, streamer):
            streamer.put([[1, 2, 3], [4, 5, 6]])      # the prompt
            for step in ([7, 8], [9, 2], [2, 2]):      # EOS = 2: row 1 stops at step 2
                streamer.put(step)
            streamer.end()
            return ids

        def test_it(tpw):
            s = TokenCountingStreamer(2)
            seen = []
            tpw(fake_generate, [[0]], s, tokens=lambda _: seen.append(s.take()) or seen[-1])
            # row 0: 7, 9, 2 (EOS); row 1: 8, 2 (EOS), then pad fill
            assert len(seen) >= 3 and set(seen) == {5}
            assert tpw.result is not None and tpw.result.n == 2
        """
    )
    res = pytester.runpytest_subprocess("--tpw", "--tpw-rounds", "2", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)


def test_importing_count_imports_no_engine_and_no_pytest() -> None:
    code = (
        "import sys, pytest_tpw.count; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytest', '_pytest', 'torch', 'transformers', 'openai', 'numpy')); print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------
# vLLM: RequestOutput / CompletionOutput of the documented shape
# ---------------------------------------------------------------------------------------------


def request_output(completions: list[list[int]], cached: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        request_id="r",
        prompt="p",
        prompt_token_ids=[1, 2, 3, 4],
        outputs=[
            SimpleNamespace(index=i, text="t", token_ids=ids, finish_reason="stop")
            for i, ids in enumerate(completions)
        ],
        finished=True,
        num_cached_tokens=cached,
    )


def test_vllm_tokens_sums_every_completion_of_every_request() -> None:
    outs = [request_output([[5, 6, 2]]), request_output([[5, 2], [7, 7, 7, 7]])]  # n=2
    counter = VllmTokens()
    assert counter(outs) == 3 + 2 + 4
    assert counter(outs[1]) == 6  # a single RequestOutput
    assert vllm_cached_prompt_tokens(outs) is None


def test_vllm_cached_prompt_tokens_is_none_safe() -> None:
    outs = [request_output([[1]], cached=None), request_output([[1]], cached=16)]
    assert vllm_cached_prompt_tokens(outs) == 16
    assert vllm_cached_prompt_tokens([request_output([[1]], cached=0)]) == 0


def test_vllm_cache_hit_warns_once_per_counter() -> None:
    outs = [request_output([[1, 2]], cached=32)]
    counter = VllmTokens()
    with pytest.warns(TpwMeasurementWarning, match="32 prompt token.*nonce prefix") as rec:
        assert counter(outs) == 2
        assert counter(outs) == 2
    assert len([w for w in rec if issubclass(w.category, TpwMeasurementWarning)]) == 1
    with pytest.warns(TpwMeasurementWarning):
        VllmTokens()(outs)  # a fresh counter warns again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VllmTokens()([request_output([[1]], cached=0)])  # no hit, no warning


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        ("text", "a list of RequestOutput"),
        ([SimpleNamespace(text="x")], "item 0 .* has no .outputs"),
        ([SimpleNamespace(outputs=[SimpleNamespace(text="x")])], "outputs\\[0\\].outputs\\[0\\]"),
    ],
)
def test_vllm_tokens_errors(outputs: Any, match: str) -> None:
    with pytest.raises(TokenCountError, match=match):
        VllmTokens()(outputs)


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible: the openai package's own objects, and dicts
# ---------------------------------------------------------------------------------------------


def chat_dict(completion: int = 12, prompt: int = 30, cached: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def chunks_dicts(usage_last: bool = True) -> list[dict[str, Any]]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    out = [
        {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        for piece in ("Hel", "lo wor", "ld")
    ]
    if usage_last:
        out.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
            }
        )
    return out


def test_openai_counts_real_chat_and_completion_objects() -> None:
    openai = pytest.importorskip("openai")
    chat = openai.types.chat.ChatCompletion.model_validate(chat_dict(12, 30))
    assert openai_tokens(chat) == 12
    assert openai_usage(chat) == count.OpenAIUsage(30, 12, None)
    comp = openai.types.Completion.model_validate(
        {
            "id": "x",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "text": "hi", "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
        }
    )
    assert openai_tokens(comp) == 7


def test_openai_counts_a_stream_with_include_usage_not_its_chunks() -> None:
    openai = pytest.importorskip("openai")
    chunks = [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in chunks_dicts()]
    assert openai_tokens(chunks) == 5  # not len(chunks) - 1 == 3
    assert openai_tokens(iter(chunks)) == 5  # a stream, consumed
    assert openai_tokens(chunks_dicts()) == 5


def test_openai_stream_with_cumulative_usage_takes_the_last() -> None:
    chunks = chunks_dicts(usage_last=False)
    for i, c in enumerate(chunks):  # vLLM continuous_usage_stats: usage on every chunk
        c["usage"] = {"prompt_tokens": 9, "completion_tokens": 2 * (i + 1), "total_tokens": 0}
    assert openai_tokens(chunks) == 6


def test_openai_missing_usage_is_an_error_never_a_chunk_count() -> None:
    openai = pytest.importorskip("openai")
    chunks = [
        openai.types.chat.ChatCompletionChunk.model_validate(c)
        for c in chunks_dicts(usage_last=False)
    ]
    with pytest.raises(TokenCountError, match='stream_options=\\{"include_usage": True\\}'):
        openai_tokens(chunks)
    no_usage = chat_dict()
    del no_usage["usage"]
    with pytest.raises(TokenCountError, match="server sends no usage"):
        openai_tokens(no_usage)
    with pytest.raises(TokenCountError, match="server sends no usage"):
        openai_tokens(openai.types.chat.ChatCompletion.model_validate(no_usage))
    with pytest.raises(TokenCountError, match="expected an OpenAI-compatible response"):
        openai_tokens(42)
    with pytest.raises(TokenCountError, match="none of completion_tokens, output_tokens"):
        openai_tokens({"usage": {"prompt_tokens": 1}})


def test_openai_responses_api_usage_fields() -> None:
    resp = {"usage": {"input_tokens": 40, "output_tokens": 11, "total_tokens": 51}}
    assert openai_usage(resp) == count.OpenAIUsage(40, 11, None)


def test_openai_cached_prompt_tokens_reported_and_warned_once() -> None:
    openai = pytest.importorskip("openai")
    chat = openai.types.chat.ChatCompletion.model_validate(chat_dict(12, 30, cached=24))
    counter = OpenAITokens()
    with pytest.warns(TpwMeasurementWarning, match="24 prompt token") as rec:
        assert counter.usage(chat) == count.OpenAIUsage(30, 12, 24)
        assert counter(chat) == 12
    assert len(rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OpenAITokens()(chat_dict(cached=0)) == 12


# ---------------------------------------------------------------------------------------------
# SGLang and llama-cpp-python: dicts of their documented shape
# ---------------------------------------------------------------------------------------------


def sglang_result(rid: str, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "text": "x",
        "meta_info": {
            "id": rid,
            "prompt_tokens": 10,
            "completion_tokens": completion,
            "cached_tokens": cached,
            "finish_reason": {"type": "stop"},
        },
    }


def test_sglang_single_batch_and_stream() -> None:
    assert SglangTokens()(sglang_result("a", 7)) == 7
    assert SglangTokens()([sglang_result("a", 7), sglang_result("b", 3)]) == 10
    stream = [sglang_result("a", n) for n in (1, 2, 3, 4)]  # cumulative meta_info
    assert SglangTokens()(stream) == 4
    no_id = [sglang_result("a", 2), sglang_result("b", 3)]
    for r in no_id:
        del r["meta_info"]["id"]
    assert SglangTokens()(no_id) == 5


def test_sglang_errors_and_cache_warning() -> None:
    with pytest.raises(TokenCountError, match="no meta_info\\['completion_tokens'\\]"):
        SglangTokens()([{"text": "x"}])
    with pytest.raises(TokenCountError, match="expected the dict"):
        SglangTokens()("text")
    counter = SglangTokens()
    with pytest.warns(TpwMeasurementWarning, match="SGLang served 8") as rec:
        counter([sglang_result("a", 3, cached=8)])
        counter([sglang_result("a", 3, cached=8)])
    assert len(rec) == 1


def llamacpp_result(completion: int) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": "m.gguf",
        "choices": [{"text": "hi", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": completion,
            "total_tokens": 5 + completion,
        },
    }


def test_llamacpp_tokens_reads_usage() -> None:
    assert llamacpp_tokens(llamacpp_result(17)) == 17


def test_llamacpp_stream_is_an_error_saying_what_to_do() -> None:
    chunk = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": "m.gguf",
        "choices": [{"text": "h", "index": 0, "logprobs": None, "finish_reason": None}],
    }
    for stream in ([chunk, chunk], iter([chunk]), chunk):
        with pytest.raises(TokenCountError, match=r"streams report no token usage.*stream=False"):
            llamacpp_tokens(stream)
    with pytest.raises(TokenCountError, match="has no 'usage'"):
        llamacpp_tokens({"id": "x"})
    with pytest.raises(TokenCountError, match="expected the dict"):
        llamacpp_tokens(3)
