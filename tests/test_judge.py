"""The judge client: FastChat rating parsing, cache, retries, circuit breaker, API key handling,
and a real local judge served by `transformers serve`."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.eval.judge import (
    API_ERROR_OUTPUT,
    JudgeClient,
    JudgeError,
    JudgeRequest,
    JudgeSettings,
    JudgmentCache,
    cache_key,
    parse_rating,
)

SENTINEL = "sk-SENTINEL-never-on-disk-4242"


def _chat_body(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]}).encode()


class FakeJudge:
    """An HTTP server answering /v1/chat/completions from a script of (status, body)."""

    def __init__(self, script):
        self.script, self.seen = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                owner.seen.append({"auth": self.headers.get("Authorization"),
                                   "body": json.loads(self.rfile.read(length))})
                status, body = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _client(url: str, cache_dir=None, **kwargs) -> JudgeClient:
    settings = JudgeSettings(base_url=url, model="judge-m", backoff_s=0.0, timeout_s=5, **kwargs)
    return JudgeClient(settings, JudgmentCache(cache_dir), sleep=lambda s: None)


def _requests(n: int) -> list[JudgeRequest]:
    return [JudgeRequest(key=f"key{i}", system_prompt="sys", user_prompt=f"question {i}")
            for i in range(n)]


@pytest.mark.parametrize("text, rating", [
    ("Fine answer. Rating: [[5]]", 5.0), ("[[8.5]]", 8.5), ("backup form [6]", 6.0),
    ("Rating: [[10]] and later [[2]]", 10.0), ("no rating at all", -1), ("[[11]]", -1),
    ("[[0]]", -1), ("", -1), (None, -1)])
def test_parse_rating_follows_fastchat(text, rating):
    assert parse_rating(text) == rating


def test_cache_key_depends_on_every_part():
    base = ("q1", 1, "ahash", "gpt-4", "single-v1", "phash")
    keys = {cache_key(*base)}
    for i, value in enumerate(("q2", 2, "bhash", "gpt-4o", "single-math-v1", "other")):
        changed = list(base)
        changed[i] = value
        keys.add(cache_key(*changed))
    assert len(keys) == 7


def test_retries_with_backoff_then_caches(tmp_path):
    script = [(503, b'{"error": "busy"}'), (429, b'{"error": "slow down"}'),
              (200, _chat_body("ok. Rating: [[9]]"))]
    with FakeJudge(script) as fake:
        client = _client(fake.url, tmp_path)
        reply = client.judge_many(_requests(1))[0]
        again = _client(fake.url, tmp_path).judge_many(_requests(1))[0]
    assert (reply.score, reply.cached, reply.error) == (9.0, False, None)
    assert client.stats.requests == 3 and client.stats.retries == 2
    assert again.cached and again.score == 9.0 and len(fake.seen) == 3


def test_bad_request_is_not_retried(tmp_path):
    with FakeJudge([(400, b'{"error": "bad"}')]) as fake:
        client = _client(fake.url, tmp_path, max_consecutive_failures=10)
        reply = client.judge_many(_requests(1))[0]
    assert reply.error and "400" in reply.error and reply.judgment == API_ERROR_OUTPUT
    assert client.stats.requests == 1


def test_endpoint_down_opens_circuit_without_raising(tmp_path):
    with FakeJudge([(200, b"{}")]) as fake:
        url = fake.url  # a port that is closed once the server stops
    client = _client(url, tmp_path, max_retries=2, max_consecutive_failures=3, concurrency=1)
    replies = client.judge_many(_requests(6))
    assert all(r.error for r in replies) and all(r.score == -1 for r in replies)
    assert client.down and client.stats.requests == 3  # later requests are never sent
    assert not list(Path(tmp_path).rglob("*.json"))  # errors are not cached


def test_garbage_answers_are_unparseable_not_fatal(tmp_path):
    script = [(200, b"<html>not json</html>"), (200, _chat_body("I like it a lot")),
              (200, b'{"choices": []}')]
    with FakeJudge(script) as fake:
        client = _client(fake.url, tmp_path, concurrency=1, max_retries=0,
                         max_consecutive_failures=10)
        replies = client.judge_many(_requests(3))
    assert [r.score for r in replies] == [-1, -1, -1]
    assert not any(r.parsed for r in replies)


def test_api_key_read_from_env_and_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_JUDGE_KEY", SENTINEL)
    with FakeJudge([(200, _chat_body("Rating: [[4]]"))]) as fake:
        client = _client(fake.url, tmp_path, api_key_env="HARNESS_TEST_JUDGE_KEY")
        assert client.judge_many(_requests(2))[0].score == 4.0
    assert fake.seen[0]["auth"] == f"Bearer {SENTINEL}"
    assert fake.seen[0]["body"]["temperature"] == 0.0
    for path in Path(tmp_path).rglob("*"):
        assert not path.is_file() or SENTINEL not in path.read_text()


def test_missing_api_key_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_NO_SUCH_KEY", raising=False)
    client = _client("http://127.0.0.1:9/v1", api_key_env="HARNESS_TEST_NO_SUCH_KEY")
    with pytest.raises(JudgeError, match="HARNESS_TEST_NO_SUCH_KEY is not set"):
        client.judge_many(_requests(1))


def test_real_local_judge_server(toy_models, tmp_path):
    """`transformers serve` on 127.0.0.1: ratings parsed, cached, and the server stopped."""
    from harness.eval.judge_server import serve_model

    _, judge_dir = toy_models
    with serve_model(judge_dir, log_path=tmp_path / "server.log") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        settings = JudgeSettings(base_url=server.base_url, model=server.model, max_tokens=24)
        first = JudgeClient(settings, JudgmentCache(tmp_path / "cache"))
        replies = first.judge_many(_requests(3))
        second = JudgeClient(settings, JudgmentCache(tmp_path / "cache"))
        cached = second.judge_many(_requests(3))
    assert [r.score for r in replies] == [7.0, 7.0, 7.0], [r.judgment for r in replies]
    assert first.stats.requests == 3 and second.stats.requests == 0
    assert all(r.cached for r in cached)
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_trial_judges_through_the_server_its_spec_names(tmp_path):
    """The driver writes the shared server into every TrialSpec; a trial prefers it to its own
    `eval.judge`; re-scoring replaces the original run's (dead) server with the live one."""
    from omegaconf import OmegaConf

    from harness.eval.judge_server import ServedModel, configured_endpoint
    from harness.records import TrialSpec, read_trial_config, write_trial_config
    from harness.trial.rescore import with_judge

    cfg = OmegaConf.create({"seed": 0, "eval": {"judge": {"base_url": None, "model": None}}})
    assert configured_endpoint(cfg) == (None, None)
    shared = TrialSpec(number=2, judge_url="http://127.0.0.1:4321/v1", judge_model="/m/judge")
    write_trial_config(tmp_path, cfg, shared)          # as the driver writes config.yaml
    trial_cfg, spec = read_trial_config(tmp_path)
    assert configured_endpoint(trial_cfg) == ("http://127.0.0.1:4321/v1", "/m/judge")
    assert configured_endpoint(trial_cfg, spec) == ("http://127.0.0.1:4321/v1", "/m/judge")
    cfg.eval.judge.base_url, cfg.eval.judge.model = "http://judge.example/v1", "gpt-4"
    assert configured_endpoint(cfg) == ("http://judge.example/v1", "gpt-4")
    live = ServedModel(base_url="http://127.0.0.1:5555/v1", model="/m/judge", port=5555, pid=1,
                       log_path=tmp_path / "judge_server.log")
    assert configured_endpoint(trial_cfg, with_judge(spec, live)) == (live.base_url, live.model)
    assert configured_endpoint(trial_cfg, with_judge(spec, None)) == (None, None)


def test_sweep_judge_is_handed_over_in_the_spec_not_the_environment(toy_models, tmp_path):
    """One server for the sweep: yielded to the caller, no environment variable set; a trial
    whose spec names it judges through it instead of starting its own."""
    from omegaconf import OmegaConf

    from harness.eval.judge_server import judge_endpoint, sweep_judge
    from harness.records import TrialSpec

    _, judge_dir = toy_models
    cfg = OmegaConf.create({"paths": {"embedded": str(tmp_path / "embedded")}, "eval": {
        "mt_bench": {"enabled": True},
        "judge": {"base_url": None, "max_tokens": 24,
                  "serve": {"model_path": str(judge_dir), "threads": 1}}}})
    before = dict(os.environ)
    with sweep_judge(cfg, tmp_path) as server:
        assert server is not None and server.base_url.startswith("http://127.0.0.1:")
        assert dict(os.environ) == before
        spec = TrialSpec(number=1, judge_url=server.base_url, judge_model=server.model)
        with judge_endpoint(cfg, tmp_path / "trial", spec) as endpoint:
            assert (endpoint.base_url, endpoint.model, endpoint.error) == (
                server.base_url, server.model, None)
            reply = endpoint.client().judge_many(_requests(1))[0]
        assert reply.score == 7.0
    assert not (tmp_path / "trial" / "judge_server.log").exists()  # no server of its own
    with sweep_judge(OmegaConf.merge(cfg, {"eval": {"judge": {
            "base_url": "http://judge.example/v1"}}}), tmp_path) as none:
        assert none is None                         # a configured endpoint: nothing to serve
    assert dict(os.environ) == before


def test_server_start_failure_is_clear(tmp_path):
    from harness.eval.judge_server import JudgeServerError, serve_model

    with pytest.raises(JudgeServerError, match="no model at"):
        with serve_model(tmp_path / "missing"):
            pass


DRIVER = """
import json, sys, time
from omegaconf import OmegaConf
from harness.eval.judge_server import sweep_judge
cfg = OmegaConf.create(json.loads(sys.argv[1]))
with sweep_judge(cfg, sys.argv[2]) as server:
    print(server.pid, flush=True)
    time.sleep(600)
"""


def test_judge_server_dies_with_a_sigkilled_driver(toy_models, tmp_path):
    """SIGKILL of the driver while its judge runs: within 10 s no server process remains (it
    runs in its own session, so only its watchdog can notice); the record the killed driver
    left is stale, and a resumed driver finds nothing to stop."""
    import signal
    import subprocess
    import sys
    import time

    from harness.eval.judge_server import SERVER_FILE, _running, stop_stale_server

    _, judge_dir = toy_models
    cfg = {"paths": {"embedded": str(tmp_path / "embedded")}, "eval": {
        "mt_bench": {"enabled": True},
        "judge": {"base_url": None, "serve": {"model_path": str(judge_dir), "threads": 1}}}}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(driver.stdout.readline())     # printed once the server is healthy
        assert _running(server_pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _running(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(server_pid), "judge server outlived its SIGKILLed driver"
    finally:
        driver.kill()
    assert (tmp_path / SERVER_FILE).is_file()          # the killed driver could not clean up
    assert stop_stale_server(tmp_path / SERVER_FILE) is None
    assert not (tmp_path / SERVER_FILE).exists()


def test_resumed_driver_stops_a_stale_server_and_spares_other_programs(tmp_path):
    """A server recorded in the sweep folder that still runs is stopped before a new one
    starts; a recorded pid now used by an unrelated program is left alone."""
    import subprocess
    import sys

    from harness.eval.judge_server import SERVE_MODULE, SERVER_FILE, _running, stop_stale_server

    record = tmp_path / SERVER_FILE
    # Stands in for a server whose watchdog failed: same entry module on its command line.
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", SERVE_MODULE],
                             start_new_session=True)
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        record.write_text(json.dumps({"pid": other.pid}))
        assert stop_stale_server(record) is None and other.poll() is None
        record.write_text(json.dumps({"pid": stale.pid}))
        assert stop_stale_server(record) == stale.pid
        stale.wait(timeout=5)
        assert not _running(stale.pid) and not record.exists()
    finally:
        stale.kill()
        other.kill()


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory):
    """A tiny chat model and a judge that always answers 'Rating: [[7]]' (built once)."""
    from harness.embedded.judge import toy_models as build

    return build(tmp_path_factory.getbasetemp() / "toy_models")
