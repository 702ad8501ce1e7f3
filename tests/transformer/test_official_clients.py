"""The clients users really call Nexus with: ``openai`` (sync, async, streaming) and KServe's."""

from __future__ import annotations

import asyncio

import numpy
import openai
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.support.servers import Transformer
from tests.transformer.conftest import KEY

pytestmark = pytest.mark.usefixtures("healthy")
MESSAGES = [{"role": "user", "content": "What is KServe?"}]


def test_openai_sync_chat_and_models(gateway: Transformer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=6)
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert [m.id for m in client.models.list()] == ["chat", "primary"]
    client.close()


def test_openai_async_streaming(gateway: Transformer) -> None:
    async def run() -> tuple[list[str], object]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
        stream = await client.chat.completions.create(
            model="primary", messages=MESSAGES, max_tokens=5, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        await client.close()
        return pieces, usage

    pieces, usage = asyncio.run(run())
    assert len(pieces) == 5
    assert usage is not None


def test_openai_sync_streaming_matches_non_streaming(gateway: Transformer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    whole = client.completions.create(model="chat", prompt="same prompt", max_tokens=7)
    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model="chat", prompt="same prompt", max_tokens=7, stream=True
        )
        if chunk.choices
    )
    assert streamed == whole.choices[0].text
    client.close()


@pytest.mark.parametrize(
    ("api_key", "model", "error"),
    [
        ("wrong", "chat", openai.AuthenticationError),
        (KEY, "unknown-model", openai.NotFoundError),
    ],
)
def test_openai_errors_map_to_the_client_exceptions(
    gateway: Transformer, api_key: str, model: str, error: type[Exception]
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    with pytest.raises(error):
        client.chat.completions.create(model=model, messages=MESSAGES)
    client.close()


def test_kserve_v2_infer_through_the_transformer(gateway: Transformer) -> None:
    async def run() -> list[object]:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        tensor = InferInput(name="text", shape=[2], datatype="BYTES")
        tensor.set_data_from_numpy(numpy.array([b"a", b"b"], dtype=object))
        request = InferRequest(model_name="chat", infer_inputs=[tensor])
        response = await client.infer(gateway.url, request, model_name="chat",
                                      headers={"x-api-key": KEY})  # fmt: skip
        await client.close()
        return list(response.outputs[0].data)

    outputs = asyncio.run(run())
    assert len(outputs) == 2


def test_kserve_v1_predict_through_the_transformer(gateway: Transformer) -> None:
    async def run() -> dict[str, object]:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        answer = await client.infer(gateway.url, {"instances": ["hello", "world"]},
                                    model_name="chat", headers={"x-api-key": KEY})  # fmt: skip
        await client.close()
        return dict(answer)

    predictions = asyncio.run(run())["predictions"]
    assert isinstance(predictions, list)
    assert len(predictions) == 2
