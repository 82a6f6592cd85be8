"""ChatGLM-6B (v1) runs natively: converted from THUDM's layout, its tokenizer ids, positions, mask, logits, greedy
generation and chat answers equal what THUDM's own code computed (tests/fixtures/chatglm6b/reference.json, built
by build_fixture.py with THUDM's modeling/tokenization code under transformers 4.33). The fixture's .py files
raise ImportError, so nothing here can have run THUDM's code."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from core.errors import ConversionError
from core.models.chatglm_v1 import convert_chatglm_v1, convert_tokenizer, is_chatglm_v1_checkpoint
from core.models.glm1 import LINEAR_MODULES, Glm1Config, Glm1ForCausalLM, positions
from core.models.glm1.chat import chat, format_prompt, messages, process_response, prompt_ids
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "chatglm6b"
CHECKPOINT = FIXTURE / "checkpoint"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text(encoding="utf-8"))
MODEL_REF = REFERENCE["model"]
IMAGE_TOKENS = 20000
# SentencePiece drops the dummy "▁" of every leading piece that is only spaces; our decoder drops one leading
# space. Only text that starts with "▁"/spaces decodes differently, which THUDM's chat() strips anyway.
DECODE_DIFFERS_AT_START = {"▁already a meta space"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    target = tmp_path_factory.mktemp("glm1") / "chatglm-6b-native"
    report = convert_chatglm_v1(CHECKPOINT, target)
    return target, report


@pytest.fixture(scope="module")
def model(converted):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(converted):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(converted[0]))


def last_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


# ------------------------------------------------------------------------------------------ conversion


def test_remote_code_stand_ins_refuse_to_run_and_the_conversion_needs_none(converted):
    for name in ("modeling_chatglm.py", "configuration_chatglm.py", "tokenization_chatglm.py", "quantization.py"):
        with pytest.raises(ImportError, match="remote code must not run"):
            exec(compile((CHECKPOINT / name).read_text(), name, "exec"), {})
    target, report = converted
    assert not list(target.glob("*.py"))
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "glm1_workbench" and "auto_map" not in config
    assert config["architectures"] == ["Glm1ForCausalLM"]
    # THUDM's padding kept: 1,144 tokens in 1,328 embedding rows, as the real 130,344 in 130,528.
    assert (report.num_image_tokens, report.vocab_size, report.tokenizer_model) == (0, 1328, "unigram")
    assert (config["vocab_size"], config["tokenizer_vocab_size"]) == (1328, 1144)
    assert report.dtype == "float16"  # the checkpoint's torch_dtype, kept


def test_detects_v1_checkpoints_only(tmp_path):
    assert is_chatglm_v1_checkpoint(CHECKPOINT)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "chatglm", "padded_vocab_size": 65024, "multi_query_attention": True})
    )
    assert not is_chatglm_v1_checkpoint(tmp_path)  # ChatGLM2/3
    assert not is_chatglm_v1_checkpoint(tmp_path / "missing")


def test_loads_through_the_auto_classes_and_the_loader_without_remote_code(converted):
    """A fresh process: importing the loader is all it takes (it registers model_type glm1_workbench)."""
    script = (
        "import json, sys, torch; from core.models.loader import load_model, load_tokenizer\n"
        "m = load_model(sys.argv[1], dtype=torch.float32, device='cpu'); t = load_tokenizer(sys.argv[1])\n"
        "print(json.dumps([type(m).__name__, m.lm_head.weight is m.transformer.word_embeddings.weight,"
        " t('你好').input_ids]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(converted[0])], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first = REFERENCE["checkpoint"]["tokens"][0]
    assert first["text"] == "你好"
    assert json.loads(result.stdout.splitlines()[-1]) == ["Glm1ForCausalLM", True, first["ids_with_special_tokens"]]


def test_refuses_a_non_empty_target_and_overwrites_only_its_own_conversion(tmp_path):
    from core.errors import RunStateError

    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(RunStateError, match="not empty"):
            convert_chatglm_v1(CHECKPOINT, target, overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    convert_chatglm_v1(CHECKPOINT, empty)  # an existing empty folder is fine
    assert (empty / "model.safetensors").is_file()
    with pytest.raises(RunStateError, match="not empty"):
        convert_chatglm_v1(CHECKPOINT, empty)  # an earlier conversion of ours, but no overwrite asked for
    (empty / "model.safetensors").write_bytes(b"stale")
    convert_chatglm_v1(CHECKPOINT, empty, overwrite=True)  # ours: replaced by a complete new one
    assert (empty / "model.safetensors").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]  # no staging folder left behind


def test_a_conversion_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    """The weights are written, then writing the tokenizer fails (say the disk fills): no target, no staging."""
    from transformers import PreTrainedTokenizerFast

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_chatglm_v1(CHECKPOINT, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_checkpoint_whose_files_disagree(tmp_path):
    source = tmp_path / "broken"
    shutil.copytree(CHECKPOINT, source)
    config = json.loads((source / "config.json").read_text())
    tokens = REFERENCE["checkpoint"]["vocab_size"]
    # An embedding with fewer rows than the tokenizer has tokens: some token would have no row.
    (source / "config.json").write_text(json.dumps({**config, "vocab_size": tokens - 1}))
    with pytest.raises(ConversionError, match=f"the tokenizer has {tokens} tokens but config.json vocab_size is"):
        convert_chatglm_v1(source, tmp_path / "out")
    (source / "config.json").write_text(json.dumps({**config, "gmask_token_id": 7}))
    with pytest.raises(ConversionError, match="gmask_token_id is 7"):
        convert_chatglm_v1(source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_refuses_the_icetk_era_tokenizer_file(tmp_path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    source = tmp_path / "icetk"
    shutil.copytree(CHECKPOINT, source)
    proto = model_pb2.ModelProto()
    proto.ParseFromString((source / "ice_text.model").read_bytes())
    kept = [p for p in proto.pieces if p.piece != "[gMASK]"]
    del proto.pieces[:]
    proto.pieces.extend(kept)
    (source / "ice_text.model").write_bytes(proto.SerializeToString())
    with pytest.raises(ConversionError, match="icetk"):
        convert_chatglm_v1(source, tmp_path / "out")


# ------------------------------------------------------------------------------------------- tokenizer


def check_tokens(tokenizer, reference: dict, offset: int = 0) -> None:
    for token, token_id in reference["special_ids"].items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id + offset, token
    for row in reference["tokens"]:
        text, ids = row["text"], [i + offset for i in row["ids"]]
        assert tokenizer.encode(text, add_special_tokens=False) == ids, text
        assert tokenizer.encode(text) == [i + offset for i in row["ids_with_special_tokens"]], text
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        if text in DECODE_DIFFERS_AT_START:
            assert decoded.lstrip() == row["decoded"].lstrip(), text
        else:
            assert decoded == row["decoded"], text


def test_slim_tokenizer_ids_equal_thudms(tokenizer):
    """The final hub revision (num_image_tokens 0): newlines, tabs, runs of spaces (2..80 and longer), Chinese,
    English, NFKC-normalized and byte-fallback text, with THUDM's [gMASK] <sop> appended."""
    assert REFERENCE["checkpoint"]["num_image_tokens"] == 0
    assert len(tokenizer) == REFERENCE["checkpoint"]["vocab_size"]
    check_tokens(tokenizer, REFERENCE["checkpoint"])


def test_first_release_tokenizer_ids_equal_thudms(tmp_path):
    """Ids after 20,000 image tokens (tokenizer_config.json without num_image_tokens), a BPE ice_text.model; saved
    and loaded back through AutoTokenizer like a converted folder's."""
    from transformers import AutoTokenizer

    reference = REFERENCE["tokenizer_images"]
    assert reference["num_image_tokens"] == IMAGE_TOKENS
    convert_tokenizer(FIXTURE / "tokenizer_images").save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tokenizer) == reference["vocab_size"]
    assert tokenizer.convert_ids_to_tokens(7) == "<image_7>"
    check_tokens(tokenizer, reference)


# ----------------------------------------------------------------------------------------------- model


def test_position_ids_and_mask_equal_thudms(model):
    ids = torch.tensor([MODEL_REF["input_ids"]])
    assert positions.position_ids(ids, model.config)[:, 0].tolist() == MODEL_REF["position_ids"]
    mask = positions.attention_mask(ids, model.config, 0, None, ids.shape[1], ids.device)
    assert (~mask[0, 0]).int().tolist() == MODEL_REF["attention_mask_blocked"]


def test_logits_equal_thudms(model, tokenizer):
    ids = tokenizer(MODEL_REF["prompt"])["input_ids"]
    assert ids == MODEL_REF["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    # The first position sees the whole prompt (bidirectional), the last one is <sop>.
    torch.testing.assert_close(logits[0], torch.tensor(MODEL_REF["first_logits"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(logits[-1], torch.tensor(MODEL_REF["last_logits"]), atol=1e-4, rtol=0)


def test_residual_scale_is_sqrt_56_whatever_the_depth(converted):
    """THUDM's blocks never learn the model's depth: a 2-layer model uses sqrt(2 * 28), and the fixture can tell."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(converted[0]))
    assert config.num_hidden_layers == 2 and config.residual_scale == math.sqrt(56)
    wrong = Glm1ForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32, residual_scale=math.sqrt(4))
    gap = (last_logits(wrong.eval(), MODEL_REF["input_ids"]) - torch.tensor(MODEL_REF["last_logits"])).abs().max()
    assert gap > 0.1


def test_greedy_generation_equals_thudms_with_and_without_cache(model):
    ids = torch.tensor([MODEL_REF["input_ids"]])
    for use_cache in (True, False):
        output = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=use_cache)
        assert output[0, ids.shape[1] :].tolist() == MODEL_REF["greedy_new_tokens"], use_cache


def test_logits_keep_the_padded_rows_and_generation_never_picks_one(converted, tokenizer):
    """The 184 padded embedding rows stay (the logits have THUDM's shape), yet generation never emits one, even when
    a padded row is the most likely next token: no token decodes from it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32).eval()
    rows, tokens = REFERENCE["checkpoint"]["embedding_rows"], len(tokenizer)
    assert (rows, tokens) == (tokens + 184, REFERENCE["checkpoint"]["vocab_size"])
    ids = torch.tensor([MODEL_REF["input_ids"]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        assert out.logits.shape[-1] == rows
        # Point every padded row (lm_head is tied to the embeddings) along the last hidden state: they now win.
        hidden = out.hidden_states[-1][0, -1]
        model.transformer.word_embeddings.weight[tokens:] = 100 * hidden / hidden.norm() ** 2
        logits = model(ids).logits[0, -1]
    assert logits.argmax().item() >= tokens  # what an unguarded generate would pick
    for sampling in ({"do_sample": False}, {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}):
        output = model.generate(ids, max_new_tokens=4, **sampling)
        assert output[0, ids.shape[1] :].max().item() < tokens, sampling


@pytest.mark.parametrize("case", ["chat", "chat_with_history"])
def test_chat_answer_equals_thudms(model, tokenizer, case):
    reference = MODEL_REF[case]
    history = [tuple(turn) for turn in reference["history"]]
    if history:
        assert format_prompt(reference["query"], history) == reference["prompt"]
    assert prompt_ids(tokenizer, reference["query"], history) == reference["prompt_ids"]
    response, new_history = chat(model, tokenizer, reference["query"], history, max_new_tokens=8)
    assert response == reference["response"]
    assert new_history == history + [(reference["query"], response)]


def test_process_response_is_thudms():
    assert process_response("  [[训练时间]]发布,好!吗?a,b  ") == "2023年发布，好！吗？a,b"


def jinja_ids(tokenizer, conversation: list[dict[str, str]], generation: bool = False) -> list[int]:
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=generation)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def thudm_ptuning_sample(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """THUDM's ptuning/main.py preprocess_function_train for ChatGLM-6B: build_inputs_with_special_tokens(a, b)
    is a [gMASK] <sop> b <eop>, and the labels start at <sop> (`[-100] * context_length + input_ids[mask + 1:]`)."""
    a_ids = tokenizer.encode(prompt, add_special_tokens=False)
    b_ids = tokenizer.encode(answer, add_special_tokens=False)
    special = tokenizer.convert_tokens_to_ids
    input_ids = a_ids + [special("[gMASK]"), special("<sop>")] + b_ids + [special("<eop>")]
    context_length = input_ids.index(tokenizer.bos_token_id)
    mask_position = context_length - 1
    return input_ids, [-100] * context_length + input_ids[mask_position + 1 :]


def test_the_chatglm_template_is_chosen_for_v1_and_its_prompts_are_thudms(tokenizer, demo_tokenizer):
    """`auto` picks chatglm for the v1 tokenizer (<sop>, no <|user|>) and glm4 for GLM-4's; the encoder, the
    tokenizer's Jinja and THUDM's chat() give the same prompt ids, with and without history."""
    from core.data.template import TemplateEncoder, detect_template

    assert (detect_template(tokenizer), detect_template(demo_tokenizer)) == ("chatglm", "glm4")
    encoder = TemplateEncoder(tokenizer, "auto")
    assert encoder.template.name == "chatglm"
    assert encoder.stop_token_ids == [tokenizer.convert_tokens_to_ids("<eop>")] == [tokenizer.eos_token_id]
    for case in ("chat", "chat_with_history"):
        reference = MODEL_REF[case]
        turns = messages(reference["query"], [tuple(turn) for turn in reference["history"]])
        assert encoder.encode_prompt(turns) == reference["prompt_ids"], case
        assert jinja_ids(tokenizer, turns, generation=True) == reference["prompt_ids"], case


def test_the_chatglm_training_layout_and_loss_mask_are_thudms_ptuning(tokenizer):
    """prompt [gMASK] <sop> answer <eop>, loss on <sop>, the answer and <eop>: what THUDM's P-tuning code builds,
    token for token; the tokenizer's Jinja renders the same ids for the conversation, a system prompt included."""
    from core.data.formats import Conversation
    from core.data.template import TemplateEncoder

    encoder = TemplateEncoder(tokenizer, "chatglm")
    history = [("你好", "你好，我是小智。"), ("介绍一下你自己", "我是一个\n语言模型。")]
    query, answer = "今天天气怎么样？", "今天天气很好,\n适合出门!"
    turns = messages(query, history) + [{"role": "assistant", "content": answer}]
    for system in ("", "你是一个助手。"):
        conversation = Conversation(turns, system)
        prompt = (f"{system}\n" if system else "") + format_prompt(query, history)
        ids, labels = encoder.encode(conversation, cutoff_len=10**6)
        assert (ids, labels) == thudm_ptuning_sample(tokenizer, prompt, answer), system
        rendered = ([{"role": "system", "content": system}] if system else []) + turns
        assert jinja_ids(tokenizer, rendered) == ids, system
        assert encoder.encode_prompt(turns[:-1], system) == jinja_ids(tokenizer, rendered[:-1], generation=True)
    trained = [token for token, label in zip(ids, labels) if label != -100]
    special = tokenizer.convert_tokens_to_ids
    assert (trained[0], trained[-1]) == (special("<sop>"), special("<eop>"))
    assert tokenizer.decode(trained[1:-1]) == answer
    single = Conversation(messages(query) + [{"role": "assistant", "content": answer}])
    assert encoder.encode(single, 10**6) == thudm_ptuning_sample(tokenizer, query, answer)  # the bare query
    with pytest.raises(Exception, match="no tool role"):
        jinja_ids(tokenizer, [{"role": "tool", "content": "x"}] + turns)


def test_left_padded_batch_generates_as_each_prompt_alone(model, tokenizer):
    prompts = [MODEL_REF["prompt"], "短"]
    singles = [
        model.generate(torch.tensor([tokenizer(p)["input_ids"]]), max_new_tokens=6, do_sample=False)[0, -6:]
        for p in prompts
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padding
    output = model.generate(**batch, max_new_tokens=6, do_sample=False)
    for row, single in zip(output[:, -6:], singles):
        assert row.tolist() == single.tolist()


def test_prefix_cache_generation_equals_full_forward(model):
    """A P-tuning v2 prefix given as the cache (the way core.methods.ptuning_v2.PrefixAdapter generates): every
    prompt token sees it, positions ignore it, and cached decoding equals recomputing everything each step."""
    from transformers import DynamicCache

    config, prefix_length = model.config, 3
    generator = torch.Generator().manual_seed(0)
    shape = (1, config.num_attention_heads, prefix_length, config.head_dim)
    prefix = [
        (torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))
        for _ in range(config.num_hidden_layers)
    ]

    def prefix_cache():
        cache = DynamicCache(config=config)
        for layer, (key, value) in enumerate(prefix):
            cache.update(key.clone(), value.clone(), layer)
        return cache

    ids = torch.tensor([MODEL_REF["input_ids"]])
    mask = torch.ones(1, prefix_length + ids.shape[1], dtype=torch.long)
    output = model.generate(input_ids=ids, attention_mask=mask, cache=prefix_cache(), max_new_tokens=5, do_sample=False)
    sequence = ids
    with torch.no_grad():
        for _ in range(5):
            full_mask = torch.ones(1, prefix_length + sequence.shape[1], dtype=torch.long)
            logits = model(sequence, attention_mask=full_mask, cache=prefix_cache()).logits[0, -1]
            sequence = torch.cat([sequence, logits.argmax().view(1, 1)], dim=1)
    assert output[0].tolist() == sequence[0].tolist()
    assert output[0, ids.shape[1] :].tolist() != MODEL_REF["greedy_new_tokens"][:5]  # the prefix changed something


# ------------------------------------------------------------------------------------------- training


def training_batch(tokenizer) -> dict:
    """Two samples, prompt [gMASK] <sop> answer <eop>, loss on the answer only, right-padded."""
    rows = []
    for query, answer in (("你好", "你好，我是小智。"), ("今天天气怎么样？", "今天天气很好。")):
        prompt = prompt_ids(tokenizer, query)
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append((prompt + answer_ids, [-100] * len(prompt) + answer_ids))
    length = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([ids + [pad] * (length - len(ids)) for ids, _ in rows]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in rows]),
        "labels": torch.tensor([labels + [-100] * (length - len(labels)) for _, labels in rows]),
    }


def test_lora_all_linear_trains(converted, tokenizer):
    from peft import LoraConfig, get_peft_model

    base = Glm1ForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32)
    peft_model = get_peft_model(
        base, LoraConfig(task_type="CAUSAL_LM", target_modules="all-linear", r=8, lora_alpha=16, lora_dropout=0.0)
    )
    targeted = {name.split(".")[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert targeted == set(LINEAR_MODULES) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
    batch = training_batch(tokenizer)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-3)
    peft_model.train()
    losses = []
    for _ in range(12):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_gives_the_same_gradients(converted, tokenizer):
    batch = training_batch(tokenizer)
    grads = []
    for checkpointing in (False, True):
        model = Glm1ForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        loss = model(**batch).loss
        loss.backward()
        grads.append((loss.item(), model.transformer.layers[0].attention.query_key_value.weight.grad.clone()))
    assert model.transformer.layers[0].gradient_checkpointing
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-5)


def test_prefix_tuning_under_gradient_checkpointing_keeps_the_prefix(converted, tokenizer):
    """transformers drops a cache that a checkpointed layer would write twice; v1's blocks only read it while
    training, so peft's P-tuning prefix is kept: the same loss and prefix gradients with checkpointing as without."""
    from peft import PrefixTuningConfig, get_peft_model

    batch = training_batch(tokenizer)
    results = []
    for checkpointing in (False, True):
        base = Glm1ForCausalLM.from_pretrained(str(converted[0]), dtype=torch.float32)
        base.config.use_cache = False  # as the Trainer runs it
        torch.manual_seed(0)
        model = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
        if checkpointing:  # after peft, as the Trainer turns it on (peft refuses a model that already has it)
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.item(), model.prompt_encoder["default"].embedding.weight.grad.clone()))
    assert base.transformer.layers[0].gradient_checkpointing
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    assert results[0][1].abs().max() > 0
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        no_prefix = base(**batch).loss.item()
    assert abs(no_prefix - results[1][0]) > 1e-3  # the prefix took part


def test_one_dimensional_positions_are_refused(model):
    """Padding-free packing passes positions [batch, seq]; v1's are [2, batch, seq]: never misread them."""
    ids = torch.tensor([MODEL_REF["input_ids"]])
    with pytest.raises(ValueError, match="2D positions"):
        model(ids, position_ids=torch.arange(ids.shape[1])[None])


def test_save_and_load_round_trip_gives_identical_logits(model, tmp_path):
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert reloaded.lm_head.weight is reloaded.transformer.word_embeddings.weight
    ids = MODEL_REF["input_ids"]
    assert torch.equal(last_logits(reloaded, ids), last_logits(model, ids))


def test_first_release_checkpoint_converts_with_its_image_token_ids(tmp_path, tokenizer):
    """The first release numbered text tokens after 20,000 image tokens: the same model with 20,000 rows in front
    of its embeddings and every id shifted gives the same text logits."""
    source = tmp_path / "first-release"
    shutil.copytree(CHECKPOINT, source)
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    del tokenizer_config["num_image_tokens"]  # as in the first release: THUDM's default, 20000
    (source / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((source / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "mask_token_id", "gmask_token_id", "pad_token_id", "vocab_size"):
        config[key] += IMAGE_TOKENS
    (source / "config.json").write_text(json.dumps(config))
    state = torch.load(source / "pytorch_model.bin", weights_only=True)
    images = torch.zeros(IMAGE_TOKENS, config["hidden_size"], dtype=torch.float16)
    state["transformer.word_embeddings.weight"] = torch.cat([images, state["transformer.word_embeddings.weight"]])
    state["lm_head.weight"] = state["transformer.word_embeddings.weight"]
    torch.save(state, source / "pytorch_model.bin")

    report = convert_chatglm_v1(source, tmp_path / "native")
    assert report.num_image_tokens == IMAGE_TOKENS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shifted_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "native"))
    ids = shifted_tokenizer(MODEL_REF["prompt"])["input_ids"]
    assert ids == [i + IMAGE_TOKENS for i in MODEL_REF["input_ids"]]
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "native"), dtype=torch.float32).eval()
    torch.testing.assert_close(
        last_logits(model, ids)[IMAGE_TOKENS:], torch.tensor(MODEL_REF["last_logits"]), atol=1e-4, rtol=0
    )


def test_config_round_trips_through_json():
    config = Glm1Config(
        vocab_size=100, hidden_size=32, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4
    )
    again = Glm1Config.from_dict(json.loads(config.to_json_string()))
    assert (again.residual_scale, again.head_dim, again.tie_word_embeddings) == (math.sqrt(56), 8, True)
