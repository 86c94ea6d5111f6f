"""A minimal AWS Lambda Runtime API (the HTTP interface a custom runtime's `bootstrap`
polls), so the functions' real binaries run as Lambda would run them."""

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ports import free_port

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    __test__ = False

    def __init__(self, timeout_s=30):
        # Each invocation's deadline, as the function's configured timeout sets it in Lambda
        # (infra/template.yaml: 300 s for deliver, 30 s for the others).
        self.timeout_ms = int(timeout_s * 1000)
        self.events = queue.Queue()
        self.results = {}
        self.done = threading.Condition()
        self.first_next_at = None
        self.init_error = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self.send_error(404)
                if api.first_next_at is None:
                    api.first_next_at = time.monotonic()
                request_id, event = api.events.get()
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + api.timeout_ms))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:baton")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts[:2] == ["init", "error"]:
                    api.init_error = data.decode(errors="replace")
                elif len(parts) == 3 and parts[0] == "invocation":
                    with api.done:
                        api.results[parts[1]] = (parts[2], data.decode(errors="replace"))
                        api.done.notify_all()
                else:
                    return self.send_error(404)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event, timeout=60):
        """Queues `event` for the function; returns ("response" | "error", body)."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        with self.done:
            ok = self.done.wait_for(lambda: request_id in self.results, timeout=timeout)
        assert ok, f"no answer to invocation {request_id} (init error: {self.init_error})"
        return self.results[request_id]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def start_function(binary, api, env, log_path):
    """Runs a function binary as Lambda would, with the Runtime API at `api`."""
    lambda_env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}",
        "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(binary),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/baton",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        **env,
    }
    log = open(log_path, "wb")
    started = time.monotonic()
    proc = subprocess.Popen([binary], env=lambda_env, stdout=log, stderr=subprocess.STDOUT)
    return proc, started
