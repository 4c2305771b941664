"""The LLM scorer (lab.learn.llm) on a tiny Mistral built here: random weights, a tokenizer trained on the spot,
saved to a temporary folder and loaded back through the same code path as a real model. Offline."""

import json

import numpy as np
import pandas as pd
import pytest

import lab
from lab.learn import llm
from lab.learn.features import optimum_labels
from lab.learn.llm import LLMScorer, build_prompt, describe_tensors, few_shot_examples

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def small_trace(seed=0):
    """A synthetic transformer trace (kind, op, layer, access, stride columns) plus module/phase/dtype/shape."""
    trace = lab.generate_trace("transformer", num_layers=1, seed=seed)
    trace["module"] = "layers." + trace["layer"].astype(str) + ".block"
    trace["phase"] = "forward"
    trace["dtype"] = "bfloat16"
    trace["shape"] = "(64, 64)"
    return trace


def _corpus():
    """Text the tokenizer learns its words from: prompts of two traces and the answers."""
    texts = []
    for seed in (0, 1):
        _, descriptions = describe_tensors(small_trace(seed))
        texts += [build_prompt(d, [llm.FewShotExample(d, 3)]) for d in descriptions]
    return texts + [f"Answer: {d}" for d in range(10)] + ["bytes KB MB never reused more"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer Mistral (hidden 32) with seeded random weights and a WordLevel tokenizer, saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-mistral")
    specials = ["[UNK]", "[PAD]", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    config = MistralConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                           max_position_embeddings=4096, pad_token_id=tok.token_to_id("[PAD]"),
                           bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"))
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test its own disk cache, an empty memory cache and no configured model."""
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(llm.MODEL_ENV, raising=False)
    monkeypatch.setattr(llm, "_MEMORY_CACHE", {})
    llm.configure()
    yield
    llm.configure()


def count_model_calls(monkeypatch):
    calls = []
    original = LLMScorer._digit_logits

    def counted(self, input_ids, attention_mask):
        calls.append(input_ids.shape[0])
        return original(self, input_ids, attention_mask)

    monkeypatch.setattr(LLMScorer, "_digit_logits", counted)
    return calls


def check_scores(trace, scores):
    assert scores.shape == (len(trace),) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 9).all()
    per_tensor = pd.Series(scores).groupby(trace["tensor_id"].to_numpy()).nunique()
    assert (per_tensor == 1).all()  # one score per tensor, on every access


def test_scores_one_per_access_equal_per_tensor_deterministic_and_cached(tiny_model, monkeypatch):
    trace = small_trace()
    calls = count_model_calls(monkeypatch)
    scorer = LLMScorer(model=str(tiny_model), quantization=None, device="cpu", batch_size=8)
    first = scorer.predict(trace)
    check_scores(trace, first)
    assert calls and max(calls) <= 8  # batched
    assert np.ptp(first) > 0  # the random model does tell tensors apart
    n_calls = len(calls)
    assert np.array_equal(scorer.predict(trace), first)  # memory cache
    assert len(calls) == n_calls
    monkeypatch.setattr(llm, "_MEMORY_CACHE", {})
    again = LLMScorer(model=str(tiny_model), quantization=None, device="cpu", batch_size=8)
    assert np.array_equal(again.predict(trace), first)  # disk cache: the model is not even loaded
    assert len(calls) == n_calls and again._loaded is None
    files = list((llm.score_cache_dir()).glob("*.json"))
    assert [f.stem for f in files] == [scorer.identity] and not list(llm.score_cache_dir().glob("*.tmp"))
    assert len(json.loads(files[0].read_text())) == len(set(scorer.prompts(trace)[1]))  # one entry per prompt
    files[0].write_text("{not json")  # a damaged cache is scored again, not trusted
    monkeypatch.setattr(llm, "_MEMORY_CACHE", {})
    assert np.array_equal(LLMScorer(**scorer.get_params()).predict(trace), first)
    assert len(calls) > n_calls
    n_calls = len(calls)
    # without the cache: computed again, deterministically, whatever the batch size
    fresh = LLMScorer(model=str(tiny_model), quantization=None, device="cpu", batch_size=3, cache=False)
    np.testing.assert_allclose(fresh.predict(trace), first, atol=1e-4)
    assert len(calls) > n_calls


def test_registered_scorer_uses_the_configured_model(tiny_model, monkeypatch):
    trace = small_trace()
    monkeypatch.setattr(llm, "DEFAULT_MODEL", "no-such-org/no-such-model")  # even where Mistral is in the cache
    with pytest.raises(ValueError, match="not on disk.*LAB_LLM_MODEL"):
        lab.score(trace, "llm")
    monkeypatch.setenv(llm.MODEL_ENV, str(tiny_model))
    llm.configure(quantization=None, device="cpu")
    scored = lab.score(trace, "llm")
    assert scored["eviction_score"].between(0, 1).all()
    direct = LLMScorer(model=str(tiny_model), quantization=None, device="cpu").predict(trace)
    np.testing.assert_allclose(scored["eviction_score"], direct / 9)
    assert "llm" in lab.scorer_names()
    result = lab.simulate(scored, "ML", capacity_mb=16)
    assert result.metrics["accesses"] == len(trace)


def test_prompt_describes_the_tensor_features():
    trace = small_trace()
    encoded, descriptions = describe_tensors(trace)
    assert len(descriptions) == trace["tensor_id"].nunique() == encoded.n_tensors
    code = int(np.flatnonzero(encoded.tensor_ids == "Wq_0")[0])
    text = descriptions[code]
    rows = trace[trace["tensor_id"] == "Wq_0"]
    for feature in ("size 2 MB", "kind weight", f"ops {rows['op'].iloc[0]}", "module layers.0.block", "layer 0",
                    "phase forward", "dtype bfloat16", "shape (64, 64)", f"{len(rows)} access",
                    "model Transformer"):
        assert feature in text, (feature, text)
    assert "reuse distance" in text or "never reused" in text
    prompt = build_prompt(text)
    assert text in prompt and prompt.endswith("Answer:") and "0 (needed again immediately)" in prompt


def test_few_shot_prompts_hold_optimum_labelled_examples(tiny_model):
    other = small_trace(seed=1)
    examples = few_shot_examples(other, capacity_mb=8, n_examples=3, labels="optimum", seed=0)
    assert len(examples) == 3 and all(0 <= e.digit <= 9 for e in examples)
    assert len({e.description for e in examples}) == 3
    assert few_shot_examples(other, capacity_mb=8, n_examples=3, labels="optimum", seed=0) == examples  # seeded
    assert len({e.digit for e in examples}) > 1  # spread over the scale
    belady = few_shot_examples(other, capacity_mb=8, n_examples=3, labels="belady")
    assert len(belady) == 3
    scorer = LLMScorer(model=str(tiny_model), quantization=None, device="cpu", few_shot=examples)
    trace = small_trace()
    _, prompts = scorer.prompts(trace)
    for example in examples:
        assert all(f"{example.description}\n{llm.QUESTION}\nAnswer: {example.digit}" in p for p in prompts)
    check_scores(trace, scorer.predict(trace))
    assert scorer.get_params()["few_shot"] == list(examples)


def test_labels_follow_the_optimum():
    # A is reused right away and fits: kept (digit 0); B is used once: never needed again (digit 9)
    trace = pd.DataFrame({"tensor_id": ["A", "A", "B", "A"], "size_mb": [1.0, 1.0, 1.0, 1.0]})
    _, digits = llm._tensor_digits(trace, 1, labels="optimum")
    assert digits.tolist() == [0, 9]
    _, digits = llm._tensor_digits(trace, 1, labels="belady")  # Belady cannot bypass B: A misses once
    assert digits.tolist() == [4, 9]
    _, digits = llm._tensor_digits(trace, 2, labels="belady")
    assert digits.tolist() == [0, 9]


def test_few_shot_digits_are_the_learned_scorers_labels_per_tensor():
    """One way of labelling: a tensor's digit is 9 x (1 - the mean of optimum_labels' ``kept`` over its accesses
    that have a next use), for each method, on a trace with reads and writes."""
    trace = lab.generate_trace("Transformer", num_layers=2)
    encoded = lab.encode_trace(trace)
    capacity = lab.working_set_mb(trace) * 0.1
    for method in ("optimum", "belady"):
        kept = optimum_labels(encoded, capacity, method=method)["kept"].to_numpy()
        reused = encoded.next_use >= 0
        expected = pd.Series(kept[reused]).groupby(encoded.codes[reused]).mean()
        _, digits = llm._tensor_digits(trace, capacity, labels=method)
        assert digits[expected.index].tolist() == np.rint(9 * (1 - expected.to_numpy())).astype(int).tolist()
        assert (digits[np.setdiff1d(np.arange(encoded.n_tensors), expected.index)] == 9).all()


def test_bad_arguments_and_missing_model(tmp_path):
    with pytest.raises(ValueError, match="quantization"):
        LLMScorer(model=str(tmp_path), quantization="int4")
    with pytest.raises(ValueError, match="batch_size"):
        LLMScorer(batch_size=0)
    with pytest.raises(TypeError, match="few_shot"):
        LLMScorer(few_shot="examples")
    missing = LLMScorer(model=str(tmp_path / "nowhere"), quantization=None)
    with pytest.raises(ValueError, match=r"not on disk.*LLMScorer\(model="):
        missing.predict(small_trace())
    with pytest.raises(ValueError, match="config.json"):
        LLMScorer(model=str(tmp_path), quantization=None).predict(small_trace())
    with pytest.raises(ValueError, match="labels"):
        few_shot_examples(small_trace(), capacity_mb=8, labels="oracle")
    with pytest.raises(ValueError, match="capacity_mb"):
        few_shot_examples(small_trace(), labels="belady")
    assert LLMScorer().get_params()["model"] == llm.DEFAULT_MODEL


def test_loads_local_files_only_never_remote_code(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append(kwargs)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    LLMScorer(model=str(tiny_model), quantization=None, device="cpu").predict(small_trace())
    assert len(seen) == 2
    assert all(kwargs.get("local_files_only") is True for kwargs in seen)
    assert all(kwargs.get("trust_remote_code") is False for kwargs in seen)


@pytest.mark.parametrize("quantization", ["nf4", pytest.param("int8", marks=pytest.mark.slow)])
def test_quantized_through_bitsandbytes(tiny_model, quantization):
    """4-bit and 8-bit through bitsandbytes: on CUDA, or on CPU where the installed bitsandbytes runs there
    (0.45+ builds with the CPU backend); skipped with the reason otherwise."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'lab[llm]')")
    pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'lab[llm]')")
    trace = small_trace()
    scorer = LLMScorer(model=str(tiny_model), quantization=quantization, batch_size=8, cache=False)
    try:
        scores = scorer.predict(trace)
    except (RuntimeError, NotImplementedError, ImportError) as error:
        if torch.cuda.is_available():
            raise
        pytest.skip(f"bitsandbytes {quantization} does not run on this machine's CPU: {error}")
    check_scores(trace, scores)
    _, model, _, _ = scorer._loaded
    layer = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}[quantization]
    assert any(type(m).__name__ == layer for m in model.modules())
    assert scorer.get_params()["quantization"] == quantization


def test_chat_template_wraps_the_question(tiny_model):
    """An instruct model's chat template wraps the tensor and the question; the answer prefix follows it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    digit_ids = LLMScorer._digit_ids(tokenizer)
    prompt = build_prompt(describe_tensors(small_trace())[1][0])
    plain = LLMScorer()._encode(tokenizer, prompt, digit_ids)
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]"
                               "{% endfor %}")
    wrapped = LLMScorer()._encode(tokenizer, prompt, digit_ids)
    assert wrapped[0] == tokenizer.bos_token_id and len(wrapped) > len(plain)
    assert wrapped[-2:] == plain[-2:]  # both end with "Answer :"


def test_a_name_is_found_in_the_local_hugging_face_cache(tiny_model, tmp_path, monkeypatch):
    """A repository name resolves to its snapshot in the local cache, without network (local_files_only)."""
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--lab-test--tiny-mistral" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any network call would fail loudly
    assert llm.resolve_model_path("lab-test/tiny-mistral") == snapshot.resolve()
    with pytest.raises(ValueError, match="not on disk"):
        llm.resolve_model_path("lab-test/absent-model")
    scorer = LLMScorer(model="lab-test/tiny-mistral", quantization=None, device="cpu")
    check_scores(small_trace(), scorer.predict(small_trace()))


@pytest.mark.parametrize("split_digits", [False, True])
def test_answer_tokens_follow_the_tokenizer(split_digits):
    """SentencePiece-style tokenizers: the answer digit is "▁5" (one token) or "▁" then "5" (digits split, as in
    Llama and Mistral); the prompt's tokens end where the digit starts, either way."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    steps = [pre_tokenizers.Metaspace()] + ([pre_tokenizers.Digits(individual_digits=True)] if split_digits else [])
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(special_tokens=["<unk>", "<s>", "</s>"], vocab_size=600))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    digit_ids = LLMScorer._digit_ids(tokenizer)
    digits = tokenizer.convert_ids_to_tokens(digit_ids)
    assert digits == [("" if split_digits else "▁") + str(d) for d in range(10)]
    prompt = build_prompt("Tensor: size 2 MB.")
    ids = LLMScorer()._encode(tokenizer, prompt, digit_ids)
    for d, digit_id in enumerate(digit_ids):
        assert tokenizer(f"{prompt} {d}")["input_ids"] == ids + [digit_id]
