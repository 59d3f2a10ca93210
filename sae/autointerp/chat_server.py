"""A minimal OpenAI-compatible chat server around a LocalLLM (POST /v1/chat/completions, GET /v1/models), on the
standard library's threading HTTP server: what the endpoint backend's tests and benchmark talk to, and a way to share
one loaded local model between processes. Greedy answers with `logprobs`/`top_logprobs` as OpenAI returns them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sae.autointerp.local import LocalLLM

MAX_BODY = 1 << 22


class ChatHandler(BaseHTTPRequestHandler):
    """Answers chat completions with `server.llm`; counts requests in flight (`server.in_flight`, `server.peak`)."""

    server: ChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: tests and benchmarks read the numbers, not the log
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.llm.name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._send(400, {"error": {"message": "a JSON body is required", "type": "invalid_request"}})
        try:
            body = json.loads(self.rfile.read(length))
            messages, max_tokens = body["messages"], int(body.get("max_tokens") or 64)
        except (ValueError, KeyError, TypeError) as e:
            return self._send(400, {"error": {"message": f"bad request: {e}", "type": "invalid_request"}})
        with self.server.counter:
            self.server.in_flight += 1
            self.server.peak = max(self.server.peak, self.server.in_flight)
            self.server.requests += 1
        try:
            top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
            text, tokens, usage = self.server.llm.generate(messages, max_tokens=max_tokens, top_logprobs=top)
        finally:
            with self.server.counter:
                self.server.in_flight -= 1
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                                     "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())}
                                                      for a, alp in alts]} for t, lp, alts in tokens]}
        self._send(200, {
            "id": f"chatcmpl-{self.server.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.server.llm.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                         "finish_reason": "length" if usage.completion_tokens >= max_tokens else "stop"}],
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.prompt_tokens + usage.completion_tokens}})


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, llm: LocalLLM, host: str = "127.0.0.1", port: int = 0, handler=ChatHandler):
        super().__init__((host, port), handler)
        self.llm = llm
        self.counter = threading.Lock()
        self.in_flight = self.peak = self.requests = 0

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        """Serve in a background thread; `shutdown()` stops it."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self
