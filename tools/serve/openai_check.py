"""The official `openai` Python client against a real bitnet-serve on 127.0.0.1.

Usage: python openai_check.py PATH/TO/bitnet-serve

Starts the server (bundled demo model, OS-chosen ports), then checks chat, streaming chat with
usage, completions, and the client's exception types for 400, 401 and 429. Exits non-zero on
the first failure.
"""

import subprocess
import sys
import threading
import time
import urllib.request

import openai


def start(binary, *args):
    proc = subprocess.Popen(
        [binary, "--port", "0", *args], stderr=subprocess.PIPE, text=True
    )
    for line in proc.stderr:
        if "listening on http://" in line:
            addr = line.split("listening on http://")[1].split()[0]
            break
    else:
        raise SystemExit("bitnet-serve did not start")
    # Keep draining stderr so the server never blocks on it.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://{addr}/health").status == 200:
                break
        except Exception:
            time.sleep(0.05)
    return proc, f"http://{addr}/v1"


def check(binary):
    proc, base = start(binary, "-np", "2")
    try:
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        models = client.models.list()
        model = models.data[0].id
        chat = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=8,
            temperature=0,
        )
        assert chat.object == "chat.completion", chat
        assert isinstance(chat.choices[0].message.content, str)
        assert chat.choices[0].finish_reason in ("stop", "length")
        assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

        pieces, usage, ids = [], None, set()
        for chunk in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    pieces.append(c.delta.content)
        assert len(ids) == 1, ids
        assert "".join(pieces) == chat.choices[0].message.content, (pieces, chat)
        assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens

        done = client.completions.create(model=model, prompt="ROMEO:", max_tokens=5, temperature=0)
        assert done.object == "text_completion" and isinstance(done.choices[0].text, str)
        assert done.usage.completion_tokens <= 5

        try:
            client.completions.create(model=model, prompt="x", temperature=5)
            raise AssertionError("temperature 5 was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and "temperature" in str(e), e
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, "exit status after SIGTERM"

    proc, base = start(binary, "--api-key", "sesame")
    try:
        wrong = openai.OpenAI(base_url=base, api_key="nope", max_retries=0)
        try:
            wrong.completions.create(model="m", prompt="x", max_tokens=1)
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e
        right = openai.OpenAI(base_url=base, api_key="sesame", max_retries=0)
        assert right.completions.create(model="m", prompt="x", max_tokens=1).choices
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # One slot, one waiting place: with both taken by long requests, a third gets 429.
    proc, base = start(binary, "-np", "1", "--queue", "1", "-t", "1", "--kernel", "scalar")
    try:
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        long = dict(model="m", prompt="ROMEO:", max_tokens=240, extra_body={"ignore_eos": True})
        workers = [threading.Thread(target=client.completions.create, kwargs=long) for _ in range(2)]

        def wait_for(*needles):
            for _ in range(1000):
                metrics = urllib.request.urlopen(base.replace("/v1", "/metrics")).read().decode()
                if all(n in metrics for n in needles):
                    return
                time.sleep(0.01)
            raise AssertionError(f"the server never reported {needles}")

        # One after the other: sent together, the second can find the first still in the queue
        # (not yet given the slot) and be refused itself.
        workers[0].start()
        wait_for("bitnet_slots_busy 1")
        workers[1].start()
        wait_for("bitnet_requests_waiting 1", "bitnet_slots_busy 1")
        try:
            client.completions.create(**long)
            raise AssertionError("a full queue accepted a request")
        except openai.RateLimitError as e:
            assert e.status_code == 429, e
        for w in workers:
            w.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("openai client checks: 4 passed, 0 failed")


if __name__ == "__main__":
    check(sys.argv[1])
