"""Point the official OpenAI client at `tether serve`.

    python examples/openai_client.py [--policy baseline]   (starts a server on a free port, then stops it)

``--policy`` picks the engine's scheduling preset (default: tether); ``/health`` reports it.
"""

import socket
import subprocess
import sys
import time

import httpx
from openai import OpenAI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tether serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("tether serve did not become healthy")


if __name__ == "__main__":
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tether.cli", "serve", "--port", str(port), *sys.argv[1:]])
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        print("policy:", httpx.get(f"http://127.0.0.1:{port}/health").json()["policy"])
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Name a color."}], max_tokens=16,
            temperature=0, extra_body={"program_id": "example-1", "is_last_turn": True})
        print(reply.choices[0].message.content)
        print("usage:", reply.usage.prompt_tokens, "prompt,", reply.usage.completion_tokens, "completion")
        stream = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Count to three."}], max_tokens=16,
            temperature=0, stream=True)
        print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
    finally:
        server.terminate()
        server.wait(timeout=30)
