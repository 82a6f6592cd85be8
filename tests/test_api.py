"""The OpenAI-compatible API, driven by the official `openai` client against a server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from core.api import ApiServer, create_api
from core.chat.engine import ChatEngine
from core.config import RunConfig
from core.training.runner import TrainingSession
from tests.conftest import IDENTITY_FIRST_ANSWER, REPO
from tests.ui_server import free_port

pytestmark = pytest.mark.slow

OTHER_ANSWER = "我是小白，一只会说话的猫。"


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_model_dir, chinese_identity_dataset):
    """A server with two adapters that answer 你是谁？ differently."""
    root = tmp_path_factory.mktemp("api")
    data = root / "cat.json"
    data.write_text(
        json.dumps(
            [
                {"instruction": q, "output": OTHER_ANSWER}
                for q in ("你是谁？", "你叫什么？", "介绍一下你自己", "Who are you?")
            ],
            ensure_ascii=False,
        )
    )
    runs = (
        ("identity", dict(dataset="identity", max_steps=130)),
        ("cat", dict(dataset=str(data), max_steps=60)),
        (
            "prefix",
            dict(
                dataset=chinese_identity_dataset,  # see conftest
                max_steps=130,
                finetuning_type="ptuning_v2",
                learning_rate=1e-2,
                pre_seq_len=8,
                prefix_projection=True,
            ),
        ),
    )
    for name, settings in runs:
        config = RunConfig.from_dict({"learning_rate": 2e-3, "num_train_epochs": 0, **settings})
        assert TrainingSession(config, root / name).run()["state"] == "finished"
    engine = ChatEngine()
    engine.load_model("demo")
    adapters = {name: str(root / name / "adapter") for name, _ in runs}
    server = ApiServer(create_api(engine, "demo", lambda: adapters, api_key="sk-test"), port=free_port()).start()
    server.engine = engine  # the tests look at what the engine is doing
    yield server, root
    server.stop()


def client(server, key="sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)


def ask(api: openai.OpenAI, model: str, text: str = "你是谁？", **kwargs):
    kwargs.setdefault("max_tokens", 48)
    return api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, **kwargs
    )


def test_models_and_completions(served):
    server, _ = served
    api = client(server)
    assert [m.id for m in api.models.list().data] == ["demo", "identity", "cat", "prefix"]
    answer = ask(api, "identity")
    assert answer.choices[0].message.content == IDENTITY_FIRST_ANSWER
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 8 and answer.usage.completion_tokens > 5
    assert ask(api, "cat").choices[0].message.content == OTHER_ANSWER
    assert ask(api, "prefix").choices[0].message.content == IDENTITY_FIRST_ANSWER  # P-tuning v2 keeps its prefix
    assert ask(api, "demo").choices[0].message.content not in (IDENTITY_FIRST_ANSWER, OTHER_ANSWER)


def test_streaming(served):
    server, _ = served
    stream = ask(client(server), "identity", stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 3 and "".join(pieces) == IDENTITY_FIRST_ANSWER


def test_alternating_concurrent_requests_do_not_mix_adapters(served):
    server, _ = served
    api = client(server)
    models = ["identity", "cat"] * 5
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda m: ask(api, m).choices[0].message.content, models))
    assert answers == [IDENTITY_FIRST_ANSWER if m == "identity" else OTHER_ANSWER for m in models]


def test_stop_sequences_and_seed(served):
    server, _ = served
    api = client(server)
    cut = ask(api, "identity", stop=["GLM"]).choices[0].message.content
    assert cut == IDENTITY_FIRST_ANSWER.split("GLM")[0].strip()
    sampled = [
        api.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], temperature=1.0, max_tokens=12, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_errors_are_openai_shaped(served):
    server, _ = served
    with pytest.raises(openai.NotFoundError) as missing:
        ask(client(server), "no-such-model")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        ask(client(server), "identity", top_p=3)
    assert bad.value.body["param"] == "top_p"
    with pytest.raises(openai.AuthenticationError):
        ask(client(server, key="wrong"), "identity")


def test_api_greedy_equals_cli_chat_greedy(served):
    server, root = served
    via_api = ask(client(server), "identity", max_tokens=256).choices[0].message.content
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "chat",
            "--adapter",
            str(root / "identity"),
            "--prompt",
            "你是谁？",
            "--greedy",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert via_api == cli.stdout.strip()


# ---- no single request can sink the server -------------------------------------------------------------------------
def post(server, body: bytes, headers: dict | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_oversized_bodies_and_contexts_are_refused_before_any_work(served):
    import http.client

    server, _ = served
    from core.api import MAX_BODY_BYTES  # room for a few images as data: URIs

    huge = json.dumps(
        {"model": "demo", "messages": [{"role": "user", "content": "长" * (MAX_BODY_BYTES // 3 + 1000)}]},
        ensure_ascii=False,
    ).encode()
    # Declared too large: refused from the headers, before the body is read.
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (
        ("Authorization", "Bearer sk-test"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(huge))),
    ):
        connection.putheader(name, value)
    connection.endheaders(huge[:4096])
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()
    # Sent in chunks with no declared length: refused once the limit is passed, not after the whole body.
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=iter([huge[: MAX_BODY_BYTES + 1024]]),
        encode_chunked=True,
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 413
    connection.close()
    api = client(server)
    with pytest.raises(openai.BadRequestError) as too_long:
        ask(api, "demo", "你好" * 10_000, max_tokens=16)  # far past the demo model's 4,096 positions
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_many:
        ask(api, "demo", max_tokens=100_000_000)
    assert too_many.value.body["code"] == "context_length_exceeded" and "4096" in too_many.value.body["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        (b'\xff\xfe{"model": "demo"}', None),
        (
            json.dumps(
                {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "seed": 99999999999999999999999}
            ).encode(),
            "seed",
        ),
        (
            json.dumps(
                {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": True, "temperature": "hot"}
            ).encode(),
            "temperature",
        ),
        (json.dumps({"model": "demo", "messages": [{"role": "robot", "content": "hi"}]}).encode(), "messages[0].role"),
        (b"[1, 2, 3]", None),
    ],
)
def test_every_bad_request_is_an_openai_error(served, body, param):
    server, _ = served
    status, text = post(server, body)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error" and error["message"] and error["param"] == param


def test_a_client_that_goes_away_stops_its_generation(served):
    import http.client

    server, _ = served
    engine = server.engine
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    body = json.dumps(
        {
            "model": "demo",
            "messages": [{"role": "user", "content": "写一篇很长的文章"}],
            "stream": True,
            "max_tokens": 3500,
            "temperature": 1.0,
            "seed": 1,
        }
    )
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data:")
    response.readline()
    connection.sock.close()  # the client goes away after the first chunk
    deadline = time.time() + 120
    while engine.busy:
        assert time.time() < deadline, "the generation went on without a reader"
        time.sleep(0.1)
    assert 0 < engine.last_generated_tokens < 3500
    assert ask(client(server), "identity").choices[0].message.content == IDENTITY_FIRST_ANSWER  # next one answered
