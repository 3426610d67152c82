"""Token counters for the ``tokens=`` argument: count what an engine generated, right by design.

Each counter takes what an engine returns and gives the number of **new** tokens it generated,
so a measurement divides joules by the work that was done, not by the prompt, padding or text
chunks. They are plain functions of the output (usable as ``tokens=counter`` or called
directly), need no pytest, and import nothing heavy: transformers, torch, openai and the rest
are duck-typed or imported only when used.

* Hugging Face transformers ``generate``: :func:`hf_new_tokens`, :func:`hf_tokens`,
  :class:`TokenCountingStreamer`.
* vLLM ``LLM.generate``: :func:`vllm_tokens`, :func:`vllm_cached_prompt_tokens`.
* OpenAI-compatible servers (vLLM, SGLang, llama.cpp, TGI, OpenAI): :func:`openai_tokens`,
  :func:`openai_usage`.
* SGLang ``Engine.generate`` / native ``/generate``: :func:`sglang_tokens`.
* llama-cpp-python ``Llama.create_completion`` / ``create_chat_completion``:
  :func:`llamacpp_tokens`.

When an engine reports prompt tokens served from a prefix cache, the counters warn once per
counter object (:class:`~pytest_tpw.warning_types.TpwMeasurementWarning`): the joules then
leave out most of the prefill work, so tokens per joule looks better than a cold request.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_tpw.errors import TpwError

__all__ = [
    "CacheWarner",
    "OpenAIUsage",
    "TokenCountError",
    "TokenCountingStreamer",
    "hf_new_tokens",
    "hf_tokens",
    "llamacpp_tokens",
    "openai_tokens",
    "openai_usage",
    "sglang_tokens",
    "vllm_cached_prompt_tokens",
    "vllm_tokens",
]


class TokenCountError(TpwError, ValueError):
    """A counter got an output it cannot count right; the message says what is missing and why."""


_NOT_GIVEN: Any = object()


def _field(obj: Any, name: str, default: Any = _NOT_GIVEN) -> Any:
    """``obj.name`` or ``obj[name]``: engines hand out objects, their HTTP APIs dicts."""
    if isinstance(obj, Mapping):
        if name in obj:
            return obj[name]
    elif hasattr(obj, name):
        return getattr(obj, name)
    if default is _NOT_GIVEN:
        raise KeyError(name)
    return default


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# ---------------------------------------------------------------------------------------------
# Prompt-cache warning, once per counter object
# ---------------------------------------------------------------------------------------------

_CACHE_ADVICE = (
    "tokens per joule then leaves out most of the prefill work and looks better than a cold "
    "request. To measure prefill too, make every call's prompt unique at its start, e.g. a "
    "per-call nonce prefix (f'[{uuid.uuid4()}] ' + prompt), or turn the prefix cache off "
    "(vLLM: enable_prefix_caching=False; SGLang: --disable-radix-cache)."
)


class CacheWarner:
    """Warns once, on the first call that sees cached prompt tokens, for this object's life.

    Every counter below is an instance of a class holding one; make a fresh counter (e.g.
    ``VllmTokens()``, ``OpenAITokens()``) to be warned again.
    """

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, cached: int | None, engine: str) -> None:
        if not cached or self.warned:
            return
        self.warned = True
        try:  # the typed warning lives with the plugin (it subclasses pytest's warnings)
            from pytest_tpw.hooks.warning_types import TpwMeasurementWarning

            category: type[Warning] = TpwMeasurementWarning
        except ImportError:  # pragma: no cover - pytest is absent
            category = UserWarning
        warnings.warn(
            f"{engine} served {cached} prompt token(s) from its prefix cache: " + _CACHE_ADVICE,
            category,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------


def _eos_ids(eos: Any) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, int):
        return [eos]
    if hasattr(eos, "tolist"):  # a tensor, as GenerationConfig may hold after generate()
        eos = eos.tolist()
    if isinstance(eos, int):
        return [eos]
    return [int(e) for e in eos]


def _prompt_width(input_ids_or_length: Any) -> int:
    if isinstance(input_ids_or_length, bool):
        raise TokenCountError("hf_new_tokens: input_ids_or_length is a bool, not ids or a length")
    if isinstance(input_ids_or_length, int):
        if input_ids_or_length < 0:
            raise TokenCountError(
                f"hf_new_tokens: prompt length {input_ids_or_length} is negative; pass the "
                "input_ids given to generate() or their width (input_ids.shape[-1])"
            )
        return input_ids_or_length
    ids = input_ids_or_length
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):  # BatchEncoding / dict from a tokenizer
        try:
            ids = ids["input_ids"]
        except KeyError:
            raise TokenCountError(
                "hf_new_tokens: the mapping given as input_ids_or_length has no 'input_ids'; "
                "pass the tokenizer's output, its input_ids, or input_ids.shape[-1]"
            ) from None
    shape = getattr(ids, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[-1])
    if isinstance(ids, Sequence) and ids and isinstance(ids[0], Sequence):
        return len(ids[0])
    raise TokenCountError(
        f"hf_new_tokens: cannot read a prompt width from {_type_name(input_ids_or_length)}; "
        "pass the (batch, prompt_len) input_ids given to generate() (left padding included) "
        "or its width as an int"
    )


def _sequences(output: Any) -> Any:
    seqs = output
    if not hasattr(output, "shape") and not isinstance(output, (list, tuple)):
        seqs = getattr(output, "sequences", None)
        if seqs is None and isinstance(output, Mapping):
            seqs = output.get("sequences")
        if seqs is None:
            raise TokenCountError(
                f"hf_new_tokens: {_type_name(output)} is neither a tensor of token ids nor a "
                "generate() output with .sequences; pass what model.generate() returned"
            )
    shape = getattr(seqs, "shape", None)
    if shape is not None and len(shape) == 1:
        seqs = seqs[None] if hasattr(seqs, "unsqueeze") else [list(seqs.tolist())]
    elif shape is not None and len(shape) != 2:
        raise TokenCountError(
            f"hf_new_tokens: output ids have shape {tuple(shape)}; expected (batch, length) "
            "as returned by model.generate()"
        )
    return seqs


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "cumsum")


def hf_new_tokens(
    output_ids: Any,
    input_ids_or_length: Any,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generation_config: Any = None,
) -> int:
    """New tokens generated by a transformers ``generate`` call, per row up to the first EOS.

    ``output_ids`` is what ``model.generate`` returned: a ``(batch, prompt + new)`` tensor, or
    a ``GenerateDecoderOnlyOutput``-like object with ``.sequences`` (``return_dict_in_generate``).
    ``input_ids_or_length`` is the ``input_ids`` given to ``generate`` (a tensor, a list of
    lists, or the tokenizer's ``BatchEncoding``) or its width as an int. With left padding the
    prompt part of every row is the padded input width, so pass the padded ``input_ids``.

    In each row, the tokens after the prompt are counted up to and including the first EOS
    (the model produced it; it cost a forward pass), and the pad fill that ``generate`` writes
    after a row has finished is not. Without any EOS id every new position is counted (the
    ``ignore_eos`` / fixed-length case). The EOS and pad ids come from ``eos_token_id`` and
    ``pad_token_id`` or else from ``generation_config`` (``model.generation_config``, or a
    model, whose ``generation_config`` is used).

    When the pad id is known (given, or from ``generation_config``, where ``generate`` pads with
    the first EOS id when no pad id is set), it checks that the EOS ids are the ones ``generate``
    stopped on: every token after a row's first EOS must be the pad id; otherwise
    :class:`TokenCountError` is raised (counting those tokens or dropping them would both be
    wrong). Rows stopped by other criteria (stop strings,
    ``max_time``) end without EOS and their pad fill is counted: use an EOS id to stop rows.

    Encoder-decoder models return only decoder ids: pass ``1`` (the decoder start token) as the
    prompt length.
    """
    if generation_config is not None and hasattr(generation_config, "generation_config"):
        generation_config = generation_config.generation_config  # a model was passed
    if eos_token_id is None and generation_config is not None:
        eos_token_id = getattr(generation_config, "eos_token_id", None)
    if pad_token_id is None and generation_config is not None:
        pad_token_id = getattr(generation_config, "pad_token_id", None)
    eos = _eos_ids(eos_token_id)
    pad: Any = pad_token_id
    if pad is None and eos and generation_config is not None:
        pad = eos[0]  # what generate() pads with when the config has no pad id
    if hasattr(pad, "item"):
        pad = int(pad.item())
    width = _prompt_width(input_ids_or_length)
    seqs = _sequences(output_ids)
    total_len = int(seqs.shape[-1]) if hasattr(seqs, "shape") else max(map(len, seqs), default=0)
    if total_len < width:
        raise TokenCountError(
            f"hf_new_tokens: the output is {total_len} tokens wide, shorter than the prompt "
            f"({width}); for an encoder-decoder model pass 1 as the prompt length, else pass "
            "the input_ids that were given to this generate() call"
        )
    if _is_torch(seqs):
        return _count_torch(seqs[:, width:], eos, pad)
    rows = seqs.tolist() if hasattr(seqs, "tolist") else [list(r) for r in seqs]
    total = 0
    for i, row in enumerate(rows):
        new = row[width:]
        n = len(new)
        for j, tok in enumerate(new):
            if tok in eos:
                n = j + 1
                if pad is not None and any(t != pad for t in new[n:]):
                    raise _not_padded(i, j)
                break
        total += n
    return total


def _not_padded(row: int, col: int) -> TokenCountError:
    return TokenCountError(
        f"hf_new_tokens: row {row} has an EOS id at new position {col} followed by tokens that "
        "are not the pad id, so generate() did not stop there; pass the eos_token_id and "
        "pad_token_id that generate() used (or its generation_config), or no EOS id at all "
        "when generation ignores EOS"
    )


def _count_torch(new: Any, eos: list[int], pad: int | None) -> int:
    import torch

    if not eos or new.shape[-1] == 0:
        return int(new.numel())
    is_eos = torch.isin(new, torch.tensor(eos, device=new.device, dtype=new.dtype))
    after = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    count = (~after).sum()
    if pad is not None:
        bad = after & (new != pad)
        if bool(bad.any()):
            row = int(bad.nonzero()[0][0].item())
            first = int(is_eos[row].nonzero()[0].item())
            raise _not_padded(row, first)
    return int(count.item())


def hf_tokens(
    input_ids: Any,
    generation_config_or_model: Any,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> Callable[[Any], int]:
    """A ``tokens=`` callable counting the new tokens of ``generate(input_ids, ...)``.

    ``tpw(model.generate, input_ids, max_new_tokens=64, tokens=hf_tokens(input_ids, model))``:
    the EOS and pad ids come from ``model.generation_config`` (or the ``GenerationConfig``
    given), unless given here; they must be the ones ``generate`` uses (if you pass
    ``eos_token_id=``/``pad_token_id=`` to ``generate``, pass them here too). ``None`` in place
    of the model means no EOS: every new position counts (fixed-length generation). See
    :func:`hf_new_tokens`.
    """
    width = _prompt_width(input_ids)

    def count(output_ids: Any) -> int:
        return hf_new_tokens(
            output_ids,
            width,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            generation_config=generation_config_or_model,
        )

    return count


class _StreamCounter:
    """Counts the token ids ``generate`` puts to a streamer; see :class:`TokenCountingStreamer`."""

    def __init__(
        self, eos_token_id: int | Sequence[int] | None = None, *, skip_prompt: bool = True
    ) -> None:
        self.eos = _eos_ids(eos_token_id)
        self.skip_prompt = skip_prompt
        self.count = 0
        self.per_row: list[int] = []
        self._finished: list[bool] = []
        self._expect_prompt = skip_prompt

    def put(self, value: Any) -> None:
        """Called by ``generate``: first with the prompt ids, then with each step's new ids."""
        ids = value.tolist() if hasattr(value, "tolist") else value
        if isinstance(ids, int):
            ids = [ids]
        if self._expect_prompt:
            self._expect_prompt = False
            return
        # one step: (batch,) one id per row; assisted decoding: (batch, k) ids per row
        rows: list[list[int]] = [r if isinstance(r, list) else [r] for r in ids]
        if not self.per_row:
            self.per_row = [0] * len(rows)
            self._finished = [False] * len(rows)
        if len(rows) != len(self.per_row):
            raise TokenCountError(
                f"TokenCountingStreamer: a step has {len(rows)} rows, earlier steps had "
                f"{len(self.per_row)}; use one streamer per generate() call, or call end() "
                "between calls"
            )
        for i, row in enumerate(rows):
            for tok in row:
                if self._finished[i]:
                    break  # pad fill after this row's EOS
                self.per_row[i] += 1
                self.count += 1
                if tok in self.eos:
                    self._finished[i] = True

    def end(self) -> None:
        """Called by ``generate`` when it is done; the next ``put`` is a new call's prompt."""
        self._expect_prompt = self.skip_prompt
        self._finished = []
        self.per_row = []

    def take(self) -> int:
        """The count so far, then reset to zero: ``tokens=lambda _: streamer.take()``."""
        n, self.count = self.count, 0
        return n


_streamer_class: type[_StreamCounter] | None = None


def _make_streamer_class() -> type[_StreamCounter]:
    global _streamer_class
    if _streamer_class is None:
        try:
            from transformers.generation.streamers import BaseStreamer
        except ImportError:
            bases: tuple[type, ...] = (_StreamCounter,)
        else:
            bases = (_StreamCounter, BaseStreamer)
        _streamer_class = type(
            "TokenCountingStreamer",
            bases,
            {"__doc__": _TOKEN_STREAMER_DOC, "__module__": __name__},
        )
    return _streamer_class


_TOKEN_STREAMER_DOC = """A ``generate(streamer=...)`` streamer that counts token ids, not text.

``TokenCountingStreamer(eos_token_id=None, *, skip_prompt=True)``. ``generate`` first puts the
prompt (skipped), then each step's new ids, one per row (for a batch) or several (assisted
decoding). With ``eos_token_id`` given (int or list), a row stops counting after its first EOS,
so the pad fill of rows that finished early is left out. ``count`` is the total since the last
``take()``; ``per_row`` holds the counts of the current call. A subclass of transformers'
``BaseStreamer`` when transformers is importable (the class is built on first use, so importing
:mod:`pytest_tpw.count` does not import transformers), else a duck-typed ``put``/``end``.

Use with the call form::

    streamer = TokenCountingStreamer(model.generation_config.eos_token_id)
    tpw(model.generate, ids, streamer=streamer, max_new_tokens=64,
        tokens=lambda _: streamer.take())
"""


if TYPE_CHECKING:
    TokenCountingStreamer = _StreamCounter
else:

    def __getattr__(name: str) -> Any:
        if name == "TokenCountingStreamer":
            return _make_streamer_class()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------


def _request_outputs(outputs: Any, who: str) -> list[Any]:
    if hasattr(outputs, "outputs") and not isinstance(outputs, (list, tuple)):
        return [outputs]  # a single RequestOutput
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    raise TokenCountError(
        f"{who}: expected what vLLM's LLM.generate returns (a list of RequestOutput, each with "
        f".outputs), got {_type_name(outputs)}"
    )


class VllmTokens:
    """Counter of vLLM ``LLM.generate`` outputs (``list[RequestOutput]``); warns on cache hits.

    Sums ``len(completion.token_ids)`` over ``request_output.outputs`` (one ``CompletionOutput``
    per sample, ``n`` of them with ``SamplingParams(n=...)``) of every request: the generated
    ids only, never ``prompt_token_ids``, and EOS at most once (vLLM stops there). When a
    request reports ``num_cached_tokens`` > 0 (automatic prefix caching), warns once per
    counter object. Field names as documented for ``vllm.outputs.RequestOutput`` and
    ``vllm.outputs.CompletionOutput``.
    """

    def __init__(self) -> None:
        self.cache_warning = CacheWarner()

    def __call__(self, outputs: Any) -> int:
        total = 0
        for i, req in enumerate(_request_outputs(outputs, "vllm_tokens")):
            completions = _field(req, "outputs", None)
            if completions is None:
                raise TokenCountError(
                    f"vllm_tokens: item {i} ({_type_name(req)}) has no .outputs; pass the "
                    "list of RequestOutput that LLM.generate returned"
                )
            for j, comp in enumerate(completions):
                ids = _field(comp, "token_ids", None)
                if ids is None:
                    raise TokenCountError(
                        f"vllm_tokens: outputs[{i}].outputs[{j}] has no .token_ids; with "
                        "RequestOutputKind.DELTA streaming sum the deltas yourself, else pass "
                        "the final RequestOutput"
                    )
                total += len(ids)
        self.cache_warning(vllm_cached_prompt_tokens(outputs), "vLLM")
        return total


def vllm_cached_prompt_tokens(outputs: Any) -> int | None:
    """Prompt tokens vLLM served from its prefix cache, summed over ``RequestOutput``\\ s.

    Reads ``RequestOutput.num_cached_tokens`` (``None`` when the engine does not report it);
    returns ``None`` when no request reports it, else the sum of those that do.
    """
    values = [
        _field(r, "num_cached_tokens", None)
        for r in _request_outputs(outputs, "vllm_cached_prompt_tokens")
    ]
    known = [int(v) for v in values if v is not None]
    return sum(known) if known else None


vllm_tokens = VllmTokens()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible responses (chat, completions, responses), plain and streamed
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAIUsage:
    """Token usage a server reported: prompt, completion, and cached prompt tokens (or None)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None


_NO_USAGE = (
    "no usage in this response. For a streamed request pass "
    'stream_options={"include_usage": True} (the last chunk then carries usage, with empty '
    "choices) and hand the counter every chunk (e.g. list(stream)); if that is already set, "
    "this server sends no usage and its output cannot be counted here (chunks are not tokens: "
    "one chunk may hold several tokens or none), so count with the model's tokenizer yourself "
    "and say so"
)


def _usage_of(response: Any, who: str) -> Any:
    usage = _field(response, "usage", None)
    if usage is not None:
        return usage
    if isinstance(response, (Mapping, str, bytes)) or hasattr(response, "choices"):
        raise TokenCountError(f"{who}: {_NO_USAGE}")
    if isinstance(response, Iterable):  # a stream or the list of its chunks
        last = None
        for chunk in response:
            u = _field(chunk, "usage", None)
            if u is not None:
                last = u  # usage is cumulative (vLLM continuous_usage_stats): keep the last
        if last is None:
            raise TokenCountError(f"{who}: {_NO_USAGE}")
        return last
    raise TokenCountError(
        f"{who}: expected an OpenAI-compatible response (with .usage) or its stream chunks, "
        f"got {_type_name(response)}"
    )


def _int_field(usage: Any, names: tuple[str, ...], who: str) -> int:
    for name in names:
        v = _field(usage, name, None)
        if v is not None:
            return int(v)
    raise TokenCountError(
        f"{who}: the usage has none of {', '.join(names)}; this server's usage is not in the "
        "OpenAI format"
    )


def _cached_of(usage: Any) -> int | None:
    for details in ("prompt_tokens_details", "input_tokens_details"):
        d = _field(usage, details, None)
        if d is not None:
            v = _field(d, "cached_tokens", None)
            if v is not None:
                return int(v)
    return None


class OpenAITokens:
    """Counter of OpenAI-compatible responses; warns once per object on cached prompt tokens.

    ``counter(response_or_chunks)`` gives the completion tokens; ``counter.usage(...)`` gives
    :class:`OpenAIUsage`. See :func:`openai_usage`.
    """

    def __init__(self) -> None:
        self.cache_warning = CacheWarner()

    def usage(self, response_or_chunks: Any) -> OpenAIUsage:
        """Prompt, completion and cached prompt tokens of one response; see :func:`openai_usage`."""
        who = "openai_usage"
        u = _usage_of(response_or_chunks, who)
        result = OpenAIUsage(
            prompt_tokens=_int_field(u, ("prompt_tokens", "input_tokens"), who),
            completion_tokens=_int_field(u, ("completion_tokens", "output_tokens"), who),
            cached_tokens=_cached_of(u),
        )
        self.cache_warning(result.cached_tokens, "the server")
        return result

    def __call__(self, response_or_chunks: Any) -> int:
        return self.usage(response_or_chunks).completion_tokens


_openai = OpenAITokens()


def openai_usage(response_or_chunks: Any) -> OpenAIUsage:
    """Token usage of an OpenAI-compatible response, plain or streamed.

    Accepts what the ``openai`` client returns (``ChatCompletion``, ``Completion``, a Responses
    API ``Response``), the same as JSON dicts, or a stream: the ``Stream`` itself (consumed) or
    the list of its chunks. A stream must have been requested with
    ``stream_options={"include_usage": True}``: its last chunk has empty ``choices`` and carries
    ``usage`` (if several chunks carry usage, as with vLLM's ``continuous_usage_stats``, the last
    one is used; usage is cumulative). Fields: ``usage.prompt_tokens``,
    ``usage.completion_tokens``, ``usage.prompt_tokens_details.cached_tokens`` (Responses API:
    ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``).

    No usage is a :class:`TokenCountError`, never a count of chunks: a chunk is a piece of text
    that may hold several tokens or none.
    """
    return _openai.usage(response_or_chunks)


def openai_tokens(response_or_chunks: Any) -> int:
    """Completion tokens of an OpenAI-compatible response, plain or streamed.

    ``tokens=openai_tokens``; see :func:`openai_usage` for what is accepted and the errors.
    Warns once (per process, for this shared counter; ``OpenAITokens()`` gives a fresh one)
    when the server reports cached prompt tokens.
    """
    return _openai(response_or_chunks)


# ---------------------------------------------------------------------------------------------
# SGLang
# ---------------------------------------------------------------------------------------------


class SglangTokens:
    """Counter of SGLang ``Engine.generate`` / native ``/generate`` results.

    A result is a dict with ``meta_info`` holding ``completion_tokens`` (and ``prompt_tokens``,
    ``cached_tokens``); a batch is a list of them. Streamed chunks carry cumulative
    ``meta_info``: chunks with the same ``meta_info["id"]`` count once, with their largest
    ``completion_tokens``. Warns once per object on ``cached_tokens`` > 0 (radix cache).
    """

    def __init__(self) -> None:
        self.cache_warning = CacheWarner()

    def __call__(self, result: Any) -> int:
        items = [result] if isinstance(result, Mapping) else result
        if not isinstance(items, (list, tuple)):
            raise TokenCountError(
                "sglang_tokens: expected the dict (or list of dicts) that SGLang's generate "
                f"returns, with meta_info, got {_type_name(result)}"
            )
        by_id: dict[Any, tuple[int, int]] = {}
        for i, item in enumerate(items):
            meta = _field(item, "meta_info", None)
            if meta is None or _field(meta, "completion_tokens", None) is None:
                raise TokenCountError(
                    f"sglang_tokens: item {i} has no meta_info['completion_tokens']; pass the "
                    "result of Engine.generate or of the native /generate endpoint (for the "
                    "OpenAI-compatible endpoints use openai_tokens)"
                )
            key = _field(meta, "id", None)
            key = ("#", i) if key is None else key
            done = int(_field(meta, "completion_tokens"))
            cached = int(_field(meta, "cached_tokens", 0) or 0)
            old = by_id.get(key, (0, 0))
            by_id[key] = (max(old[0], done), max(old[1], cached))
        self.cache_warning(sum(c for _, c in by_id.values()), "SGLang")
        return sum(n for n, _ in by_id.values())


sglang_tokens = SglangTokens()


# ---------------------------------------------------------------------------------------------
# llama-cpp-python
# ---------------------------------------------------------------------------------------------

_LLAMACPP_STREAM = (
    "llamacpp_tokens: this looks like a llama-cpp-python stream (chunks without usage); its "
    "streams report no token usage, and chunks are not tokens. Measure the non-streaming call "
    "(stream=False: its result has usage.completion_tokens), or serve the model with llama.cpp's "
    "server and count with openai_tokens on its usage"
)


def llamacpp_tokens(result: Any) -> int:
    """Completion tokens of llama-cpp-python's ``create_completion`` / ``create_chat_completion``.

    Reads ``result["usage"]["completion_tokens"]`` of the (non-streamed) dict that
    ``Llama.__call__``, ``create_completion`` and ``create_chat_completion`` return. Their
    streams (``stream=True``) carry no usage: a stream, or a list of chunks, is a
    :class:`TokenCountError` saying so, never a count of chunks.
    """
    if isinstance(result, Mapping):
        usage = result.get("usage")
        if usage is None:
            obj = str(result.get("object", ""))
            if obj.endswith("chunk") or "choices" in result:
                raise TokenCountError(_LLAMACPP_STREAM)
            raise TokenCountError(
                "llamacpp_tokens: the dict has no 'usage'; pass what create_completion or "
                "create_chat_completion returned (stream=False)"
            )
        return _int_field(usage, ("completion_tokens",), "llamacpp_tokens")
    if isinstance(result, Iterable) and not isinstance(result, (str, bytes)):
        raise TokenCountError(_LLAMACPP_STREAM)
    raise TokenCountError(
        "llamacpp_tokens: expected the dict llama-cpp-python returns (with usage), got "
        f"{_type_name(result)}"
    )
